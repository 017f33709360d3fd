// What the stand-ins share: reading a request body, answering JSON, and running as a process of its own.

export async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

// Answers `body` as JSON (unless the client has gone); `headers` are added.
export function sendJson(res, status, body, headers = {}) {
  if (res.writableEnded || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

// `node <stand-in>.mjs [--port N] [--token T]`: starts the stand-in made by `make({token})`, prints
// `describe(standIn)` as one JSON line (the test reads its URLs from it), stops on SIGTERM.
export async function serveFromCommandLine(make, describe) {
  const arg = (name) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const standIn = make({ token: arg('--token') });
  await standIn.start(Number(arg('--port') ?? 0));
  console.log(JSON.stringify(describe(standIn)));
  process.on('SIGTERM', () => standIn.stop().then(() => process.exit(0)));
}
