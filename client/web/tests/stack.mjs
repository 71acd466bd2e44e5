// A local two-region rallypoint stack for the browser tests: `rallypoint up`
// with the Singapore and New York client locations of the latency lab, and a
// hotel in Singapore whose only way out is a slow uplink over TCP.

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';

/**
 * Starts `rallypoint up` and resolves once it printed its endpoints.
 * @returns {Promise<{base: string, jwtSecret: string, stop: () => Promise<void>, killRelay: (id: string) => number, log: () => string}>}
 */
export async function startStack({ bin, repo, webDist, timeoutMs = 120_000 }) {
  const dir = mkdtempSync(join(tmpdir(), 'rallypoint-web-test-'));
  // The relays' token secret, known to the test: `rallypoint simulate` mints
  // its own simulator tokens with it (the stack's /token never grants the
  // synthetic claim).
  const jwtSecret = `web-test-${randomBytes(16).toString('hex')}`;
  const child = spawn(
    bin,
    [
      'up',
      '--dir', dir,
      '--http', '127.0.0.1:0',
      '--scenario', join(repo, 'lab/scenarios/singapore.json'),
      '--scenario', join(repo, 'lab/scenarios/new-york.json'),
      '--scenario', join(repo, 'lab/scenarios/hotel-slow-uplink.json'),
    ],
    {
      cwd: repo,
      env: { ...process.env, RALLYPOINT_WEB_DIST: webDist, RALLYPOINT_JWT_SECRET: jwtSecret },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });

  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rallypoint up not ready within ${timeoutMs} ms:\n${output}`)), timeoutMs);
    const check = () => {
      if (output.includes('Ctrl-C stops everything.')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`rallypoint up exited (${code}) during start-up:\n${output}`));
    });
  });
  await ready;
  const base = output.match(/browser app\s+(http:\/\/127\.0\.0\.1:\d+)\//)?.[1];
  if (!base) throw new Error(`rallypoint up does not serve the browser app (is client/web/dist built?):\n${output}`);

  return {
    base,
    jwtSecret,
    log: () => output,
    /** SIGKILLs the relay `id` that this stack started; returns its pid. */
    killRelay(id) {
      const pid = childPidWithArgs(child.pid, ['--relay-id', id]);
      if (!pid) throw new Error(`no relay ${id} among the children of rallypoint up (${child.pid})`);
      process.kill(pid, 'SIGKILL');
      return pid;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGINT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The child of `parent` whose command line has `args` in sequence. */
function childPidWithArgs(parent, args) {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the parenthesised command name: state, ppid, …
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== parent) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const at = argv.indexOf(args[0]);
      if (at >= 0 && args.every((arg, i) => argv[at + i] === arg)) return Number(entry);
    } catch {
      // the process ended while we looked
    }
  }
  return undefined;
}
