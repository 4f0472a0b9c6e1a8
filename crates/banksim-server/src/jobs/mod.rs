//! Background jobs: work that runs on its own schedule rather than in answer to a request.

pub mod holds;
pub mod projector;
pub mod relay;
pub mod scheduler;
