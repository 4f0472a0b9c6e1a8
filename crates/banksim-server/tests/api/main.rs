//! Black-box tests: the real server on an ephemeral port, over real HTTP, against a fresh database of every
//! backend under test (SQLite always; PostgreSQL when `TEST_DATABASE_URL` is set). One binary for all of them.

mod helpers;

mod audit;
mod auth;
mod balances;
mod batch;
mod cache;
mod concurrency;
mod effective;
mod failover;
mod faults;
mod fx;
mod holds;
mod hostile;
mod http;
mod idempotency;
mod limits;
mod metrics;
mod rate_limit;
mod redis;
mod redis_server;
mod relay;
mod replica;
mod resilience;
mod scenarios;
mod schedules;
mod service;
mod simulated_faults;
mod simulation;
mod statements;
mod tokens;
mod transactions;
mod users;
