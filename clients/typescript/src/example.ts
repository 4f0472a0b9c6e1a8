// A tiny typed client of banksim: login, credit, balance. Every type comes from src/banksim.d.ts, which is
// generated from docs/openapi.snapshot.json (`npm run generate`); `npm run check` (tsc --noEmit, run by
// scripts/contract.sh) fails when this example and the spec disagree.
import type { components, paths } from "./banksim";

type Json<T> = T extends { content: { "application/json": infer Body } } ? Body : never;

export type LoginRequest = Json<paths["/api/v1/auth/login"]["post"]["requestBody"]>;
export type LoginResponse = Json<paths["/api/v1/auth/login"]["post"]["responses"][200]>;
export type CreditRequest = Json<paths["/api/v1/transactions/credit"]["post"]["requestBody"]>;
export type Transaction = Json<paths["/api/v1/transactions/credit"]["post"]["responses"][201]>;
export type BalanceQuery = NonNullable<paths["/api/v1/balances/current"]["get"]["parameters"]["query"]>;
export type Balance = Json<paths["/api/v1/balances/current"]["get"]["responses"][200]>;
export type ErrorBody = components["schemas"]["ErrorBody"];
export type ErrorCode = ErrorBody["error_code"];

/** A refused request: the HTTP status and banksim's error body, whose `error_code` is one of the catalogue. */
export class BanksimError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(`${status} ${body.error_code}: ${body.error}`);
  }

  /** Worth retrying with the same Idempotency-Key, after `Retry-After`. */
  get retryable(): boolean {
    const codes: ErrorCode[] = [
      "rate_limited",
      "service_unavailable",
      "circuit_open",
      "write_queue_full",
      "commit_outcome_unknown",
      "request_timeout",
    ];
    return codes.includes(this.body.error_code);
  }
}

async function send<T>(
  baseUrl: string,
  method: "GET" | "POST",
  path: string,
  options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<T> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers["Authorization"] = `Bearer ${options.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(baseUrl + path, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const json: unknown = await response.json();
  if (!response.ok) throw new BanksimError(response.status, json as ErrorBody);
  return json as T;
}

export function login(baseUrl: string, body: LoginRequest): Promise<LoginResponse> {
  return send(baseUrl, "POST", "/api/v1/auth/login", { body });
}

export function credit(baseUrl: string, token: string, body: CreditRequest, idempotencyKey: string): Promise<Transaction> {
  return send(baseUrl, "POST", "/api/v1/transactions/credit", {
    token,
    body,
    headers: { "Idempotency-Key": idempotencyKey },
  });
}

export function balance(baseUrl: string, token: string, query: BalanceQuery = {}): Promise<Balance> {
  const search = query.currency ? `?currency=${encodeURIComponent(query.currency)}` : "";
  return send(baseUrl, "GET", `/api/v1/balances/current${search}`, { token });
}

/** Logs in as a demo user, credits 500.00 USD and prints the balance. */
export async function demo(baseUrl = "http://127.0.0.1:8080"): Promise<void> {
  const session = await login(baseUrl, { email: "sefa@example.com", password: "password123" });
  const posted = await credit(
    baseUrl,
    session.access_token,
    { amount: "500.00", currency: "USD", description: "Salary" },
    crypto.randomUUID(),
  );
  console.log(`credit ${posted.id}: ${posted.amount} ${posted.currency} (${posted.status})`);
  const usd = await balance(baseUrl, session.access_token, { currency: "USD" });
  console.log(`balance: ${usd.amount} ${usd.currency}`);
}
