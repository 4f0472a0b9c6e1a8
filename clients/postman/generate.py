#!/usr/bin/env python3
"""Writes banksim.postman_collection.json and banksim.postman_environment.json next to this file.

The collection is kept as code so that its 60-odd requests share one way of writing tests; edit this file, run it
(`python3 clients/postman/generate.py`) and commit both outputs. scripts/contract.sh runs the collection with newman.
"""

import json
import pathlib
import uuid

HERE = pathlib.Path(__file__).resolve().parent
SEFA = "550e8400-e29b-41d4-a716-446655440001"
KEREM = "550e8400-e29b-41d4-a716-446655440002"

USER_KEYS = ["id", "username", "email", "role", "is_active", "created_at", "updated_at"]
TX_KEYS = ["id", "type", "status", "from_user_id", "to_user_id", "amount", "currency", "description",
           "reversal_of", "reversed_by", "created_at"]
SCHEDULE_KEYS = ["id", "user_id", "transaction_type", "amount", "currency", "description", "to_user_id",
                 "schedule_type", "execute_at", "recurrence_pattern", "recurrence_end_date", "max_occurrences",
                 "current_occurrence", "next_execution_at", "last_executed_at", "status", "is_active", "created_at",
                 "updated_at"]
ERROR_KEYS = ["error", "code", "error_code", "request_id"]


def request(name, method, path, *, token=None, body=None, headers=None, status=200, keys=None, tests=(),
            prerequest=(), error_code=None, description=None):
    """One request with its tests: the status, the body's keys, the error code, then any extra lines."""
    lines = [f"pm.test('status is {status}', () => pm.response.to.have.status({status}));"]
    if keys is not None:
        lines.append(f"const body = pm.response.json();")
        lines.append(f"pm.test('body has {', '.join(keys) if keys else 'a JSON object'}', () => "
                     f"pm.expect(body).to.be.an('object').that.includes.all.keys({json.dumps(keys)[1:-1]}));"
                     if keys else "pm.test('body is a JSON object', () => pm.expect(body).to.be.an('object'));")
    if error_code:
        lines.append(f"pm.test('error_code is {error_code}', () => "
                     f"pm.expect(body.error_code).to.eql('{error_code}'));")
        lines.append(f"pm.test('code repeats the status', () => pm.expect(body.code).to.eql({status}));")
    lines.extend(tests)
    header = [{"key": "Content-Type", "value": "application/json"}] if body is not None else []
    if token:
        header.append({"key": "Authorization", "value": f"Bearer {{{{{token}}}}}"})
    for key, value in (headers or {}).items():
        header.append({"key": key, "value": value})
    item = {
        "name": name,
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": lines}}],
        "request": {"method": method, "header": header, "url": "{{baseUrl}}" + path},
    }
    if description:
        item["request"]["description"] = description
    if prerequest:
        item["event"].insert(0, {"listen": "prerequest",
                                 "script": {"type": "text/javascript", "exec": list(prerequest)}})
    if body is not None:
        raw = body if isinstance(body, str) else json.dumps(body, indent=2)
        item["request"]["body"] = {"mode": "raw", "raw": raw, "options": {"raw": {"language": "json"}}}
    return item


def error(name, method, path, status, code, **kwargs):
    return request(name, method, path, status=status, keys=ERROR_KEYS, error_code=code, **kwargs)


def folder(name, description, items):
    return {"name": name, "description": description, "item": items}


health = folder("Health", "Service routes: no authentication.", [
    request("Health", "GET", "/healthz", keys=["status"],
            tests=["pm.test('alive', () => pm.expect(body.status).to.eql('ok'));"]),
    request("Readiness", "GET", "/readyz", keys=["status", "checks"],
            tests=["pm.test('ready', () => pm.expect(body.status).to.be.oneOf(['ok', 'degraded']));",
                   "pm.test('database checked', () => pm.expect(body.checks.database).to.eql('ok'));"]),
    request("Ping", "GET", "/api/v1/ping", keys=["message"],
            tests=["pm.test('pong', () => pm.expect(body.message).to.eql('pong'));"]),
    request("OpenAPI document", "GET", "/openapi.json", keys=["openapi", "info", "paths", "components"],
            tests=["pm.test('OpenAPI 3.1', () => pm.expect(body.openapi).to.match(/^3\\.1\\./));"]),
    error("Unknown path is a JSON 404", "GET", "/api/v1/no-such-route", 404, "not_found"),
    error("Wrong method is a JSON 405", "DELETE", "/api/v1/ping", 405, "method_not_allowed",
          tests=["pm.test('Allow header', () => pm.expect(pm.response.headers.get('Allow')).to.include('GET'));"]),
])

auth = folder("Auth", "Register, login, refresh (tokens rotate), me, logout. Rate limited per client IP.", [
    request("Register", "POST", "/api/v1/auth/register", status=201, keys=USER_KEYS,
            prerequest=["const n = Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);",
                        "pm.collectionVariables.set('newUsername', 'user_' + n);",
                        "pm.collectionVariables.set('newEmail', 'user_' + n + '@example.com');"],
            body={"username": "{{newUsername}}", "email": "{{newEmail}}", "password": "password123"},
            tests=["pm.test('a plain user', () => pm.expect(body.role).to.eql('user'));",
                   "pm.test('email stored lower-case', () => pm.expect(body.email).to.eql(pm.collectionVariables.get('newEmail').toLowerCase()));",
                   "pm.collectionVariables.set('newUserId', body.id);"]),
    error("Register again: email taken", "POST", "/api/v1/auth/register", 409, "email_taken",
          body={"username": "{{newUsername}}_2", "email": "{{newEmail}}", "password": "password123"}),
    error("Register as admin without an admin token", "POST", "/api/v1/auth/register", 403,
          "insufficient_permissions",
          body={"username": "{{newUsername}}_adm", "email": "adm_{{newEmail}}", "password": "password123",
                "role": "admin"},
          description="Self-registration as admin was a flaw of the old service: only an admin may create one."),
    error("Register with invalid fields", "POST", "/api/v1/auth/register", 422, "validation_failed",
          body={"username": "x", "email": "not-an-email", "password": "short"},
          tests=["pm.test('every bad field listed', () => pm.expect(body.errors.map(e => e.field)).to.have.members(['username', 'email', 'password']));"]),
    request("Login", "POST", "/api/v1/auth/login", keys=["user", "access_token", "refresh_token", "token_type",
                                                         "expires_in"],
            body={"email": "{{userEmail}}", "password": "{{password}}"},
            tests=["pm.test('Bearer, 15 minutes', () => { pm.expect(body.token_type).to.eql('Bearer'); pm.expect(body.expires_in).to.eql(900); });",
                   "pm.test('the demo user', () => pm.expect(body.user.id).to.eql(pm.environment.get('userId')));",
                   "pm.collectionVariables.set('accessToken', body.access_token);",
                   "pm.collectionVariables.set('refreshToken', body.refresh_token);"]),
    error("Login with a wrong password", "POST", "/api/v1/auth/login", 401, "invalid_credentials",
          body={"email": "{{userEmail}}", "password": "wrong-password"}),
    request("Login as the new user", "POST", "/api/v1/auth/login", keys=["user", "access_token"],
            body={"email": "{{newEmail}}", "password": "password123"},
            tests=["pm.collectionVariables.set('newUserToken', body.access_token);",
                   "pm.collectionVariables.set('newUserRefreshToken', body.refresh_token);"]),
    request("Login as admin", "POST", "/api/v1/auth/login", keys=["user", "access_token"],
            body={"email": "{{adminEmail}}", "password": "{{password}}"},
            tests=["pm.test('an admin', () => pm.expect(body.user.role).to.eql('admin'));",
                   "pm.collectionVariables.set('adminToken', body.access_token);"]),
    request("Refresh", "POST", "/api/v1/auth/refresh",
            keys=["access_token", "refresh_token", "token_type", "expires_in"],
            body={"refresh_token": "{{refreshToken}}"},
            tests=["pm.test('the refresh token rotates', () => pm.expect(body.refresh_token).to.not.eql(pm.collectionVariables.get('refreshToken')));",
                   "pm.collectionVariables.set('spentRefreshToken', pm.collectionVariables.get('refreshToken'));",
                   "pm.collectionVariables.set('accessToken', body.access_token);",
                   "pm.collectionVariables.set('refreshToken', body.refresh_token);"],
            description="Uses the refresh token of the login above (the old collection hard-coded one)."),
    error("Refresh with a spent token", "POST", "/api/v1/auth/refresh", 401, None,
          body={"refresh_token": "{{spentRefreshToken}}"},
          tests=["pm.test('refused as reused or invalid', () => pm.expect(body.error_code).to.be.oneOf(['refresh_token_reused', 'invalid_refresh_token']));"],
          description="Presenting a spent refresh token revokes its whole family."),
    request("Login again (the family was revoked)", "POST", "/api/v1/auth/login", keys=["access_token"],
            body={"email": "{{userEmail}}", "password": "{{password}}"},
            tests=["pm.collectionVariables.set('accessToken', body.access_token);",
                   "pm.collectionVariables.set('refreshToken', body.refresh_token);"]),
    request("Me", "GET", "/api/v1/me", token="accessToken", keys=USER_KEYS,
            tests=["pm.test('the caller', () => pm.expect(body.username).to.eql('sefa'));"]),
    error("Me without a token", "GET", "/api/v1/me", 401, "unauthorized"),
])

balances = folder("Balances", "The caller's own wallets.", [
    request("Current balance", "GET", "/api/v1/balances/current?currency=USD", token="accessToken",
            keys=["user_id", "amount", "currency", "last_updated_at"],
            tests=["pm.test('USD', () => pm.expect(body.currency).to.eql('USD'));",
                   "pm.collectionVariables.set('usdBefore', body.amount);"]),
    request("All balances", "GET", "/api/v1/balances", token="accessToken", keys=["balances"],
            tests=["pm.test('a list', () => pm.expect(body.balances).to.be.an('array'));"]),
    error("Balance in an unknown currency", "GET", "/api/v1/balances/current?currency=usd", 400,
          "unsupported_currency", token="accessToken"),
])

transactions = folder("Transactions", "Credit, debit, transfer, exchange, rollback, history.", [
    request("Credit", "POST", "/api/v1/transactions/credit", token="accessToken", status=201, keys=TX_KEYS,
            prerequest=["pm.collectionVariables.set('creditKey', 'credit-' + Date.now() + '-' + Math.random());"],
            headers={"Idempotency-Key": "{{creditKey}}"},
            body={"amount": "500.00", "currency": "USD", "description": "Salary"},
            tests=["pm.test('posted', () => pm.expect(body.status).to.eql('success'));",
                   "pm.test('exact amount', () => pm.expect(body.amount).to.eql(500));",
                   "pm.collectionVariables.set('creditId', body.id);"]),
    request("Credit again with the same Idempotency-Key", "POST", "/api/v1/transactions/credit",
            token="accessToken", status=201, keys=TX_KEYS, headers={"Idempotency-Key": "{{creditKey}}"},
            body={"amount": "500.00", "currency": "USD", "description": "Salary"},
            tests=["pm.test('the stored answer', () => pm.expect(body.id).to.eql(pm.collectionVariables.get('creditId')));",
                   "pm.test('marked as replayed', () => pm.expect(pm.response.headers.get('Idempotent-Replayed')).to.eql('true'));"]),
    error("Same Idempotency-Key, another body", "POST", "/api/v1/transactions/credit", 409,
          "idempotency_key_reused", token="accessToken", headers={"Idempotency-Key": "{{creditKey}}"},
          body={"amount": "1.00", "currency": "USD"}),
    request("Credit EUR (a number amount)", "POST", "/api/v1/transactions/credit", token="accessToken",
            status=201, keys=TX_KEYS, body='{"amount": 200.50, "currency": "EUR"}',
            tests=["pm.test('EUR', () => pm.expect(body.currency).to.eql('EUR'));"]),
    error("Credit with too many decimals", "POST", "/api/v1/transactions/credit", 400, "invalid_amount",
          token="accessToken", body={"amount": "1.001", "currency": "USD"}),
    request("Debit", "POST", "/api/v1/transactions/debit", token="accessToken", status=201, keys=TX_KEYS,
            body={"amount": "50.00", "currency": "USD", "description": "Groceries"},
            tests=["pm.test('a debit', () => pm.expect(body.type).to.eql('debit'));",
                   "pm.collectionVariables.set('debitId', body.id);"]),
    error("Debit more than the wallet holds", "POST", "/api/v1/transactions/debit", 400, "insufficient_funds",
          token="accessToken", body={"amount": "999999.00", "currency": "USD"}),
    request("Transfer", "POST", "/api/v1/transactions/transfer", token="accessToken", status=201, keys=TX_KEYS,
            headers={"Idempotency-Key": "transfer-{{$guid}}"},
            body={"to_user_id": "{{recipientId}}", "amount": "25.50", "currency": "USD", "description": "Lunch"},
            tests=["pm.test('from the caller to the recipient', () => { pm.expect(body.from_user_id).to.eql(pm.environment.get('userId')); pm.expect(body.to_user_id).to.eql(pm.environment.get('recipientId')); });",
                   "pm.test('final status, never pending', () => pm.expect(body.status).to.eql('success'));",
                   "pm.collectionVariables.set('transferId', body.id);"]),
    error("Transfer to oneself", "POST", "/api/v1/transactions/transfer", 400, "self_transfer",
          token="accessToken", body={"to_user_id": "{{userId}}", "amount": "1.00", "currency": "USD"}),
    request("Batch of transfers (atomic)", "POST", "/api/v1/transactions/batch", token="accessToken", status=201,
            keys=["results"], headers={"Idempotency-Key": "batch-{{$guid}}"},
            body={"atomic": True, "transactions": [
                {"type": "transfer", "to_user_id": "{{recipientId}}", "amount": "1.00", "currency": "USD"},
                {"type": "transfer", "to_user_id": "{{recipientId}}", "amount": "2.00", "currency": "USD",
                 "description": "Split bill"}]},
            tests=["pm.test('every item posted, in order', () => { pm.expect(body.results.map(r => r.index)).to.eql([0, 1]); body.results.forEach(r => { pm.expect(r.status).to.eql('success'); pm.expect(r.transaction.status).to.eql('success'); }); });"]),
    error("Atomic batch with a refused item", "POST", "/api/v1/transactions/batch", 400, "batch_failed",
          token="accessToken",
          body={"atomic": True, "transactions": [
              {"type": "transfer", "to_user_id": "{{recipientId}}", "amount": "1.00", "currency": "USD"},
              {"type": "debit", "amount": "999999.00", "currency": "USD"}]},
          tests=["pm.test('each item says why, nothing applied', () => pm.expect(body.results.map(r => r.error.error_code)).to.eql(['batch_failed', 'insufficient_funds']));"]),
    request("Non-atomic batch", "POST", "/api/v1/transactions/batch", token="accessToken", status=201,
            keys=["results"],
            body={"atomic": False, "transactions": [
                {"type": "transfer", "to_user_id": "{{recipientId}}", "amount": "1.00", "currency": "USD"},
                {"type": "debit", "amount": "999999.00", "currency": "USD"}]},
            tests=["pm.test('each item stands alone', () => pm.expect(body.results.map(r => r.status)).to.eql(['success', 'failed']));"]),
    request("Hold (a pending transfer)", "POST", "/api/v1/transactions/transfer", token="accessToken", status=201,
            keys=TX_KEYS + ["expires_at"],
            body={"to_user_id": "{{recipientId}}", "amount": "5.00", "currency": "USD", "pending": True,
                  "timeout_secs": 600},
            tests=["pm.test('pending until posted', () => pm.expect(body.status).to.eql('pending'));",
                   "pm.collectionVariables.set('holdId', body.id);"]),
    request("Post part of the hold", "POST", "/api/v1/transactions/{{holdId}}/post", token="accessToken",
            keys=TX_KEYS, body={"amount": "4.00"},
            tests=["pm.test('posted', () => { pm.expect(body.status).to.eql('success'); pm.expect(body.amount).to.eql(4); });"]),
    error("Post the hold again", "POST", "/api/v1/transactions/{{holdId}}/post", 409, "transfer_not_pending",
          token="accessToken"),
    request("Hold to void", "POST", "/api/v1/transactions/transfer", token="accessToken", status=201, keys=TX_KEYS,
            body={"to_user_id": "{{recipientId}}", "amount": "3.00", "currency": "USD", "pending": True},
            tests=["pm.collectionVariables.set('voidId', body.id);"]),
    request("Void the hold", "POST", "/api/v1/transactions/{{voidId}}/void", token="accessToken", keys=TX_KEYS,
            tests=["pm.test('voided', () => pm.expect(body.status).to.eql('voided'));"]),
    request("Exchange USD to EUR", "POST", "/api/v1/transactions/exchange", token="accessToken", status=201,
            keys=TX_KEYS + ["to_amount", "to_currency", "rate"],
            body={"from_currency": "USD", "to_currency": "EUR", "amount": "10.00"},
            tests=["pm.test('an exchange', () => pm.expect(body.type).to.eql('exchange'));"]),
    request("Get a transaction", "GET", "/api/v1/transactions/{{transferId}}", token="accessToken", keys=TX_KEYS,
            tests=["pm.test('the transfer', () => pm.expect(body.id).to.eql(pm.collectionVariables.get('transferId')));"]),
    error("Get a transaction of others", "GET", "/api/v1/transactions/{{transferId}}", 403,
          "insufficient_permissions", token="newUserToken"),
    request("Rollback", "POST", "/api/v1/transactions/{{transferId}}/rollback", token="accessToken", status=201,
            keys=TX_KEYS,
            tests=["pm.test('reverses the transfer', () => pm.expect(body.reversal_of).to.eql(pm.collectionVariables.get('transferId')));",
                   "pm.collectionVariables.set('reversalId', body.id);"]),
    error("Rollback twice", "POST", "/api/v1/transactions/{{transferId}}/rollback", 409, "already_rolled_back",
          token="accessToken"),
    request("The original is rolled back", "GET", "/api/v1/transactions/{{transferId}}", token="accessToken",
            keys=TX_KEYS,
            tests=["pm.test('rolled_back, reversed_by set', () => { pm.expect(body.status).to.eql('rolled_back'); pm.expect(body.reversed_by).to.eql(pm.collectionVariables.get('reversalId')); });"]),
    request("History", "GET", "/api/v1/transactions/history?limit=10", token="accessToken",
            keys=["transactions", "limit", "offset", "next_cursor"],
            tests=["pm.test('newest first, ours included', () => pm.expect(body.transactions.map(t => t.id)).to.include(pm.collectionVariables.get('reversalId')));",
                   "pm.test('page size', () => pm.expect(body.limit).to.eql(10));"]),
    error("History with a bad limit", "GET", "/api/v1/transactions/history?limit=1000", 400, "invalid_parameter",
          token="accessToken"),
])

balances_after = folder("Balances over time", "History, instant and statements after the movements above.", [
    request("Balance history", "GET", "/api/v1/balances/historical?currency=USD&limit=20", token="accessToken",
            keys=["history", "limit"],
            tests=["pm.test('entries with reasons', () => body.history.forEach(h => pm.expect(h.reason).to.be.oneOf(['credit', 'debit', 'transfer_sent', 'transfer_received', 'rollback', 'exchange'])));",
                   "pm.test('credit, debit, transfer, rollback, exchange: at least five entries', () => pm.expect(body.history.length).to.be.at.least(5));"]),
    request("Balance at a time", "GET", "/api/v1/balances/at-time?currency=USD&timestamp={{now}}",
            token="accessToken", keys=["user_id", "amount", "currency", "timestamp"],
            prerequest=["pm.collectionVariables.set('now', new Date().toISOString());"]),
    error("Balance at a bad time", "GET", "/api/v1/balances/at-time?timestamp=yesterday", 400, "invalid_timestamp",
          token="accessToken"),
    request("Statements", "GET", "/api/v1/balances/statements?currency=USD", token="accessToken",
            keys=["statements"],
            tests=["pm.test('daily statements', () => body.statements.forEach(s => pm.expect(s).to.include.all.keys('date', 'currency', 'opening', 'credits', 'debits', 'closing')));"]),
])

LIMITS_KEYS = ["user_id", "currency", "overdraft", "max_balance"]
limits = folder("Wallet limits", "Overdraft and maximum balance per wallet: admins set and read them.", [
    request("Set wallet limits (admin)", "PUT", "/api/v1/admin/wallets/{{recipientId}}/USD/limits",
            token="adminToken", keys=LIMITS_KEYS, body={"overdraft": "0", "max_balance": None},
            tests=["pm.test('no ceiling', () => pm.expect(body.max_balance).to.eql(null));"]),
    request("Read wallet limits (admin)", "GET", "/api/v1/admin/wallets/{{recipientId}}/USD/limits",
            token="adminToken", keys=LIMITS_KEYS,
            tests=["pm.test('the wallet', () => pm.expect(body.user_id).to.eql(pm.environment.get('recipientId')));"]),
    error("Set wallet limits as a user", "PUT", "/api/v1/admin/wallets/{{userId}}/USD/limits", 403,
          "insufficient_permissions", token="accessToken", body={"overdraft": "1000000"}),
])

fx = folder("FX rates", "Exchange rates: everyone reads, admins set.", [
    request("List rates", "GET", "/api/v1/fx-rates", token="accessToken", keys=["rates"],
            tests=["pm.test('USD/EUR is listed', () => pm.expect(body.rates.some(r => r.base === 'USD' && r.quote === 'EUR')).to.be.true);"]),
    request("Set a rate (admin)", "PUT", "/api/v1/fx-rates/USD/EUR", token="adminToken",
            keys=["base", "quote", "rate", "updated_at"], body={"rate": "0.92"},
            tests=["pm.test('the rate', () => pm.expect(body.rate).to.eql(0.92));"]),
    error("Set a rate as a user", "PUT", "/api/v1/fx-rates/USD/EUR", 403, "insufficient_permissions",
          token="accessToken", body={"rate": "0.5"}),
])

schedules = folder("Scheduled transactions", "The caller's one-time and recurring transactions.", [
    request("Schedule", "POST", "/api/v1/scheduled-transactions", token="accessToken", status=201,
            keys=SCHEDULE_KEYS,
            body={"transaction_type": "transfer", "amount": "10.00", "currency": "USD",
                  "to_user_id": "{{recipientId}}", "schedule_type": "recurring",
                  "execute_at": "2030-01-31T09:00:00Z", "recurrence_pattern": "monthly", "max_occurrences": 12,
                  "description": "Rent"},
            tests=["pm.test('active', () => pm.expect(body.status).to.eql('active'));",
                   "pm.collectionVariables.set('scheduleId', body.id);"]),
    error("Schedule in the past", "POST", "/api/v1/scheduled-transactions", 422, "validation_failed",
          token="accessToken",
          body={"transaction_type": "credit", "amount": "10.00", "currency": "USD", "schedule_type": "once",
                "execute_at": "2020-01-01T00:00:00Z"}),
    request("List schedules", "GET", "/api/v1/scheduled-transactions?limit=20", token="accessToken",
            keys=["scheduled_transactions", "limit", "offset"],
            tests=["pm.test('ours is listed', () => pm.expect(body.scheduled_transactions.map(s => s.id)).to.include(pm.collectionVariables.get('scheduleId')));"]),
    request("Get a schedule", "GET", "/api/v1/scheduled-transactions/{{scheduleId}}", token="accessToken",
            keys=SCHEDULE_KEYS),
    request("Pause", "POST", "/api/v1/scheduled-transactions/{{scheduleId}}/pause", token="accessToken",
            keys=SCHEDULE_KEYS, tests=["pm.test('paused', () => pm.expect(body.status).to.eql('paused'));"]),
    request("Resume", "POST", "/api/v1/scheduled-transactions/{{scheduleId}}/resume", token="accessToken",
            keys=SCHEDULE_KEYS, tests=["pm.test('active', () => pm.expect(body.status).to.eql('active'));"]),
    request("Executions", "GET", "/api/v1/scheduled-transactions/{{scheduleId}}/executions",
            token="accessToken", keys=["executions"],
            tests=["pm.test('none yet', () => pm.expect(body.executions).to.eql([]));"]),
    request("Cancel", "DELETE", "/api/v1/scheduled-transactions/{{scheduleId}}", token="accessToken",
            keys=["message"],
            tests=["pm.test('cancelled', () => pm.expect(body.message).to.eql('Scheduled transaction cancelled successfully'));"]),
    error("Cancel twice", "DELETE", "/api/v1/scheduled-transactions/{{scheduleId}}", 409,
          "schedule_state_conflict", token="accessToken"),
])

users = folder("Users", "User administration: admin only.", [
    request("List users", "GET", "/api/v1/users?limit=50", token="adminToken",
            keys=["users", "limit", "offset", "total"],
            tests=["pm.test('the demo users are listed', () => pm.expect(body.users.map(u => u.username)).to.include.members(['sefa', 'kerem', 'admin']));"]),
    error("List users as a user", "GET", "/api/v1/users", 403, "insufficient_permissions", token="accessToken"),
    request("Get a user", "GET", "/api/v1/users/{{newUserId}}", token="adminToken", keys=USER_KEYS),
    request("A user's balances", "GET", "/api/v1/users/{{newUserId}}/balances", token="adminToken",
            keys=["balances"]),
    error("A user's balances as a user", "GET", "/api/v1/users/{{newUserId}}/balances", 403,
          "insufficient_permissions", token="accessToken"),
    request("Update a user", "PUT", "/api/v1/users/{{newUserId}}", token="adminToken", keys=USER_KEYS,
            body={"username": "{{newUsername}}_x"},
            tests=["pm.test('renamed', () => pm.expect(body.username).to.eql(pm.collectionVariables.get('newUsername') + '_x'));"]),
    error("Update with no field", "PUT", "/api/v1/users/{{newUserId}}", 422, "validation_failed",
          token="adminToken", body={}),
    error("Get an unknown user", "GET", "/api/v1/users/00000000-0000-4000-8000-000000000000", 404,
          "user_not_found", token="adminToken"),
    request("Delete a user", "DELETE", "/api/v1/users/{{newUserId}}", token="adminToken", keys=["message"],
            tests=["pm.test('deleted', () => pm.expect(body.message).to.eql('User is deleted'));"]),
    error("A deleted user's token stops working", "GET", "/api/v1/me", 401, None, token="newUserToken",
          tests=["pm.test('unauthorized', () => pm.expect(body.error_code).to.be.oneOf(['unauthorized', 'token_expired']));"]),
])

admin = folder("Audit, events and ledger", "Admin only.", [
    request("Audit logs", "GET", "/api/v1/audit-logs?limit=20", token="adminToken", keys=["audit_logs"],
            tests=["pm.test('entries', () => pm.expect(body.audit_logs).to.be.an('array').that.is.not.empty);"]),
    request("Events", "GET", "/api/v1/events?limit=20", token="adminToken", keys=["events", "next_after"],
            tests=["pm.test('events', () => pm.expect(body.events).to.be.an('array').that.is.not.empty);"]),
    request("Verify the ledger", "GET", "/api/v1/admin/ledger/verify", token="adminToken", keys=[]),
    error("Audit logs as a user", "GET", "/api/v1/audit-logs", 403, "insufficient_permissions",
          token="accessToken"),
])

# The contract servers run without SIMULATION_MODE (an advance would move the clock under every other request of
# the run, and schemathesis would walk it to year 9999): these requests check that the simulation routes are then
# absent. Their behaviour in simulation mode is tested black-box in crates/banksim-server/tests/api/simulation.rs
# and simulated_faults.rs.
simulation = folder("Simulation mode (off)", "Without SIMULATION_MODE the simulation routes answer 404 to everyone "
                    "and X-Simulate-Fault is ignored.", [
    error("Clock without simulation mode", "GET", "/api/v1/admin/clock", 404, "not_found", token="adminToken"),
    error("Advance without simulation mode", "POST", "/api/v1/admin/clock", 404, "not_found", token="adminToken",
          body={"advance": "30d"}),
    error("State hash without simulation mode", "GET", "/api/v1/admin/state-hash", 404, "not_found",
          token="adminToken"),
    error("Faults without simulation mode", "GET", "/api/v1/admin/faults", 404, "not_found", token="adminToken"),
    error("Set faults without simulation mode", "PUT", "/api/v1/admin/faults", 404, "not_found", token="adminToken",
          body={"rate": 0.1, "kinds": ["error_500"], "seed": 42}),
    error("Stop faults without simulation mode", "DELETE", "/api/v1/admin/faults", 404, "not_found",
          token="adminToken"),
    error("Scenarios without simulation mode", "GET", "/api/v1/admin/scenarios", 404, "not_found",
          token="adminToken"),
    error("Start a scenario without simulation mode", "POST", "/api/v1/admin/scenarios", 404, "not_found",
          token="adminToken", body={"scenario": "transfer", "users": 10, "connections": 4, "duration": "30s"}),
    error("Stop a scenario without simulation mode", "DELETE", "/api/v1/admin/scenarios", 404, "not_found",
          token="adminToken"),
    error("Console without simulation mode", "GET", "/console", 404, "not_found"),
    request("Fault header ignored without simulation mode", "GET", "/api/v1/ping",
            headers={"X-Simulate-Fault": "error=500"}, keys=["message"],
            tests=["pm.test('pong', () => pm.expect(body.message).to.eql('pong'));"]),
])

metrics = folder("Metrics", "Prometheus text and JSON summaries.", [
    request("Prometheus metrics", "GET", "/metrics",
            tests=["pm.test('Prometheus text', () => pm.expect(pm.response.text()).to.include('# TYPE'));"]),
    request("Basic metrics", "GET", "/metrics/basic",
            keys=["uptime", "uptime_seconds", "queue_depth", "transactions_processed", "cache", "database"]),
    request("Basic metrics under /api/v1", "GET", "/api/v1/metrics/basic", keys=["uptime_seconds"]),
    request("Circuit breakers", "GET", "/api/v1/metrics/circuit-breakers", keys=["circuit_breakers"],
            tests=["pm.test('the database breaker', () => pm.expect(body.circuit_breakers).to.have.property('database'));"]),
    request("Circuit breaker test: success", "GET", "/api/v1/test/circuit-breaker/success",
            keys=["message", "status"]),
])

logout = folder("Logout", "Revokes the refresh token family.", [
    request("Logout", "POST", "/api/v1/auth/logout", token="accessToken", status=204,
            body={"refresh_token": "{{refreshToken}}"}),
    error("Refresh after logout", "POST", "/api/v1/auth/refresh", 401, None,
          body={"refresh_token": "{{refreshToken}}"},
          tests=["pm.test('refused', () => pm.expect(body.error_code).to.be.oneOf(['invalid_refresh_token', 'refresh_token_reused']));"]),
])

every_response = [
    "pm.test('X-Request-ID on every answer', () => pm.expect(pm.response.headers.get('X-Request-ID')).to.be.a('string').and.not.empty);",
    "if (pm.response.code !== 204 && !pm.request.url.getPath().startsWith('/metrics')) {",
    "  pm.test('JSON body', () => pm.expect(pm.response.headers.get('Content-Type')).to.include('application/json'));",
    "}",
]

collection = {
    "info": {
        "_postman_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "banksim.postman_collection")),
        "name": "banksim",
        "description": "Every route of the banksim API, by resource, with tests. Run it top to bottom against a fresh "
                       "server prepared with `banksim seed --demo` (see the README's Clients section).",
        "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
    },
    "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": every_response}}],
    "item": [health, auth, balances, transactions, balances_after, fx, limits, schedules, users, admin, simulation,
             metrics, logout],
    "variable": [{"key": key, "value": ""} for key in [
        "newUsername", "newEmail", "newUserId", "newUserToken", "newUserRefreshToken", "accessToken", "refreshToken",
        "spentRefreshToken", "adminToken", "usdBefore", "creditKey", "creditId", "debitId", "transferId",
        "reversalId", "now", "scheduleId", "holdId", "voidId"]],
}

environment = {
    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "banksim.postman_environment")),
    "name": "banksim (local, demo users)",
    "values": [
        {"key": "baseUrl", "value": "http://127.0.0.1:8080", "type": "default", "enabled": True},
        {"key": "userEmail", "value": "sefa@example.com", "type": "default", "enabled": True},
        {"key": "userId", "value": SEFA, "type": "default", "enabled": True},
        {"key": "recipientId", "value": KEREM, "type": "default", "enabled": True},
        {"key": "adminEmail", "value": "admin@example.com", "type": "default", "enabled": True},
        {"key": "password", "value": "password123", "type": "secret", "enabled": True},
    ],
}

for name, document in [("banksim.postman_collection.json", collection),
                       ("banksim.postman_environment.json", environment)]:
    (HERE / name).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
