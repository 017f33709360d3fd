// What the stand-in checks share: a named check that stops the run on failure, and waiting on a
// condition with a deadline (never a bare sleep).
export async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}\n     ${e.stack ?? e}`);
    process.exit(1);
  }
}

export async function waitFor(condition, ms, what = 'the condition') {
  const end = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
