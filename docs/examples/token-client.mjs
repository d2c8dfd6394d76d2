// A Node (20+) client of tokenbroker's token service: no dependencies, only fetch.
//
//   TOKENBROKER_URL=http://127.0.0.1:8080 TOKENBROKER_KEY=tbk_... \
//   APP=default INSTANCE=<instance id> node token-client.mjs
//
// It reads a token for the installation, then calls Wix's Get App Instance through the
// proxy (which never hands the token out), and prints one JSON line per call. It never
// prints the token itself, only its fingerprint (the first 12 hex digits of its SHA-256,
// as tokenbroker's own logs name tokens). Exit status: 0 when both calls succeeded,
// 1 when one was refused, 2 when the environment is incomplete.
import { createHash } from "node:crypto";

const settings = {};
for (const name of ["TOKENBROKER_URL", "TOKENBROKER_KEY", "APP", "INSTANCE"]) {
  const value = process.env[name];
  if (!value) {
    console.error(`token-client: set ${name}`);
    process.exit(2);
  }
  settings[name] = value;
}

const base = settings.TOKENBROKER_URL.replace(/\/+$/, "");
const installation =
  `${base}/v1/apps/${encodeURIComponent(settings.APP)}` +
  `/instances/${encodeURIComponent(settings.INSTANCE)}`;
const headers = { Authorization: `Bearer ${settings.TOKENBROKER_KEY}` };

// tokenbroker's errors are JSON: {"error", "message", "request_id"}.
async function refusal(call, response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: say what came back
  }
  return {
    call,
    status: response.status,
    error: body.error ?? null,
    message: body.message ?? null,
    request_id: body.request_id ?? response.headers.get("x-request-id"),
    retry_after: response.headers.get("retry-after"),
  };
}

async function readToken() {
  const response = await fetch(`${installation}/token`, { headers });
  if (!response.ok) return refusal("token", response);
  const token = await response.json();
  // Use token.access_token as it is: Wix wants it raw in Authorization, no "Bearer".
  // Cache it until token.refresh_at, then ask again.
  return {
    call: "token",
    status: response.status,
    token_type: token.token_type,
    expires_at: token.expires_at,
    refresh_at: token.refresh_at,
    fingerprint: createHash("sha256").update(token.access_token).digest("hex").slice(0, 12),
  };
}

async function getAppInstance() {
  // Any Wix API path goes after /wix/; the proxy adds the installation's token.
  const response = await fetch(`${installation}/wix/apps/v1/instance`, { headers });
  if (response.status === 401 || response.status === 403) {
    // tokenbroker's refusal (a bad key), or Wix's own 401/403 passed back
    return refusal("proxy", response);
  }
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { call: "proxy", status: response.status, body };
}

let failed = false;
for (const call of [readToken, getAppInstance]) {
  let result;
  try {
    result = await call();
  } catch (error) {
    result = { call: call.name, status: null, error: "unreachable", message: String(error) };
  }
  failed ||= result.status === null || result.status >= 300;
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
