// Wix's own SDK (@wix/sdk with @wix/app-management) as a test peer for tokenbroker.
//
// The real SDK runs here unmodified; only `globalThis.fetch` is wrapped. The wrapper
// sends every request meant for a Wix host (www.wixapis.com, any *.wixapis.com,
// wix.com, any *.wix.com) to the emulator URL instead, keeping the path, query,
// method, headers and body, and records each request and the answer to it. A request
// for any other host is refused without touching the network.
//
// Input: one JSON document, as the first argument or on stdin:
//   {
//     "emulatorUrl": "http://127.0.0.1:PORT",
//     "appId": "...", "appSecret": "...",
//     "instanceIds": ["..."],       // each: AppStrategy({appId, appSecret, instanceId}):
//                                   //   a token, a BI event, Get App Instance
//     "elevate": [{"name": "...", "accessToken": "..."}],
//                                   // AppStrategy({appId, appSecret, accessToken}).elevated(),
//                                   //   then its token, and Get App Instance with it
//     "publicKey": "-----BEGIN PUBLIC KEY-----...",
//     "webhooks": [{"name": "...", "body": "<JWT>", "domain": false}]
//                                   // client.webhooks.process(body), AppStrategy({publicKey}),
//                                   //   without and with a handler for its event type
//   }
// Output: one JSON document on stdout (see `report` below). A step that throws is
// recorded as {"error": message} and the other steps still run; the exit status is 0
// whenever the document was printed, 2 when the input is unusable.
//
// Node 20 or newer, an ES module, no build step.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { AppStrategy, EventDefinition, createClient } from "@wix/sdk";
import { appInstances, biEvents } from "@wix/app-management";

const require = createRequire(import.meta.url);

function readInput() {
  const text = process.argv[2] ?? readFileSync(0, "utf8");
  const input = JSON.parse(text);
  for (const field of ["emulatorUrl", "appId", "appSecret", "publicKey"]) {
    if (typeof input[field] !== "string" || input[field] === "") {
      throw new Error(`input field ${field} must be a non-empty string`);
    }
  }
  if (!Array.isArray(input.instanceIds)) {
    throw new Error("input field instanceIds must be a list of instance IDs");
  }
  return {
    elevate: [],
    webhooks: [],
    ...input,
  };
}

function isWixHost(hostname) {
  return (
    hostname === "wixapis.com" ||
    hostname.endsWith(".wixapis.com") ||
    hostname === "wix.com" ||
    hostname.endsWith(".wix.com")
  );
}

function headerObject(headers) {
  // Lower-cased names, as HTTP compares them; `new Headers` also accepts plain objects.
  return Object.fromEntries(new Headers(headers ?? {}).entries());
}

// Every request the SDK made, oldest first.
const requests = [];

function installFetch(emulatorUrl) {
  const realFetch = globalThis.fetch;
  const target = new URL(emulatorUrl);
  globalThis.fetch = async (resource, init = {}) => {
    let url;
    let method;
    let headers;
    let body;
    if (resource instanceof Request) {
      url = new URL(resource.url);
      method = init.method ?? resource.method;
      headers = headerObject(init.headers ?? resource.headers);
      body = init.body ?? (await resource.clone().text());
    } else {
      url = new URL(String(resource));
      method = init.method ?? "GET";
      headers = headerObject(init.headers);
      body = init.body;
    }
    if (body !== undefined && body !== null && typeof body !== "string") {
      throw new Error(`interop: the SDK sent a ${typeof body} body; only strings are recorded`);
    }
    const entry = {
      url: url.toString(),
      host: url.host,
      method,
      path: url.pathname,
      query: url.search,
      headers,
      body: body ?? null,
    };
    requests.push(entry);
    if (url.protocol !== "https:" || !isWixHost(url.hostname)) {
      entry.refused = "not a Wix host";
      throw new Error(`interop: refusing to send a request to ${url.origin}`);
    }
    const rewritten = new URL(url.pathname + url.search, target);
    const response = await realFetch(rewritten, {
      method,
      headers,
      ...(body === undefined || body === null ? {} : { body }),
    });
    entry.status = response.status;
    entry.responseHeaders = headerObject(response.headers);
    entry.responseBody = await response.clone().text();
    return response;
  };
}

async function step(action) {
  try {
    return await action();
  } catch (error) {
    return { error: String(error?.message ?? error) };
  }
}

function packageVersion(name) {
  return require(`${name}/package.json`).version;
}

const input = (() => {
  try {
    return readInput();
  } catch (error) {
    process.stderr.write(`wix_sdk_peer: bad input: ${error.message}\n`);
    process.exit(2);
  }
})();
installFetch(input.emulatorUrl);

const report = {
  versions: {
    node: process.version,
    "@wix/sdk": packageVersion("@wix/sdk"),
    "@wix/app-management": packageVersion("@wix/app-management"),
  },
};

// -- each installation, through the app's own credentials -----------------------------
report.installations = [];
for (const instanceId of input.instanceIds) {
  const app = createClient({
    auth: AppStrategy({ appId: input.appId, appSecret: input.appSecret, instanceId }),
    modules: { appInstances, biEvents },
  });
  const entry = { instanceId };
  entry.token = await step(async () => {
    const { headers } = await app.auth.getAuthHeaders();
    return { headers };
  });
  entry.biEvent = await step(async () => {
    const result = await app.biEvents.sendBiEvent({
      eventName: biEvents.EventName.APP_FINISHED_CONFIGURATION,
    });
    return { result: result ?? null };
  });
  entry.appInstance = await step(async () => ({
    result: await app.appInstances.getAppInstance(),
  }));
  report.installations.push(entry);
}

// -- elevation: a token the app's dashboard was given, to the app's own token -------------
report.elevate = [];
for (const { name, accessToken } of input.elevate) {
  report.elevate.push({
    name,
    ...(await step(async () => {
      const strategy = AppStrategy({
        appId: input.appId,
        appSecret: input.appSecret,
        accessToken,
      });
      const elevated = await strategy.elevated();
      const { headers } = await elevated.getAuthHeaders();
      const client = createClient({ auth: elevated, modules: { appInstances } });
      const instance = await client.appInstances.getAppInstance();
      return { headers, instanceId: instance?.instance?.instanceId ?? null };
    })),
  });
}

// -- webhooks ---------------------------------------------------------------------------
// Each body is processed twice: by a receiver with no handlers (what process() returns),
// then by one with a handler registered for the body's event type (the envelope the
// handler is given; `domain` says whether the event is a standardized "domain" event,
// which the SDK's generated modules know from the event's definition).
function receiverClient(modules) {
  return createClient({
    auth: AppStrategy({ appId: input.appId, publicKey: input.publicKey }),
    ...(modules ? { modules } : {}),
  });
}

const receiver = receiverClient();
report.webhooks = [];
for (const { name, body, domain } of input.webhooks) {
  const entry = {
    name,
    ...(await step(async () => ({ parsed: await receiver.webhooks.process(body) }))),
  };
  if (entry.parsed) {
    entry.handled = await step(async () => {
      const definition = EventDefinition(entry.parsed.eventType, Boolean(domain))();
      const client = receiverClient({ on: definition });
      const envelopes = [];
      client.on((envelope) => {
        envelopes.push(envelope);
      });
      await client.webhooks.process(body);
      return { envelopes };
    });
  }
  report.webhooks.push(entry);
}

report.requests = requests;
process.stdout.write(JSON.stringify(report) + "\n");
