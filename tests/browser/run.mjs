#!/usr/bin/env node
// Browser interop test: headless Chromium (driven by playwright-core) running
// @moq/net over WebTransport against a running qumo relay, with moq-clock on the
// other side.
//
//   scenario 1 (clock-to-browser): moq-clock publishes, the browser subscribes.
//   scenario 2 (browser-to-clock): the browser publishes, moq-clock subscribes.
//
// Usage: node tests/browser/run.mjs --relay localhost:PORT --hash SHA256HEX
//          [--moq-clock PATH] [--clock-url URL] [--chromium PATH]
//          [--scenario all|clock-to-browser|browser-to-clock] [--timeout SECONDS]
//          [--netlog FILE] [--only-load] [--ws HOST:PORT]
// With --ws (the relay's TCP listener), every scenario runs twice: over WebTransport,
// then over the WebSocket (qmux) with WebTransport hidden from @moq/net.
// Needs tests/browser/install.sh to have run. Prints one PASS or FAIL line per
// scenario, and "N passed, N failed" last; exits 1 if any failed.
import { spawn } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CACHE = process.env.QUMO_CACHE ?? path.join(os.homedir(), ".cache", "qumo");
const NODE_DIR = path.join(CACHE, "node");
const MOQ_NET_VERSION = JSON.parse(readFileSync(path.join(HERE, "package.json"), "utf8")).dependencies["@moq/net"];
const BUNDLE = path.join(NODE_DIR, `moq-net-${MOQ_NET_VERSION}.js`);

function usage(msg) {
	console.error(`run.mjs: ${msg}`);
	console.error("usage: node tests/browser/run.mjs --relay HOST:PORT --hash SHA256HEX [--moq-clock PATH] [--clock-url URL] [--chromium PATH] [--scenario all|clock-to-browser|browser-to-clock] [--timeout SECONDS] [--netlog FILE] [--only-load]");
	process.exit(64);
}

function parseArgs(argv) {
	const opts = {
		relay: undefined,
		hash: undefined,
		moqClock: process.env.MOQ_CLOCK ?? path.join(CACHE, "bin", "moq-clock"),
		clockUrl: undefined,
		chromium: process.env.CHROMIUM ?? undefined,
		scenario: "all",
		timeout: 25,
		netlog: undefined,
		onlyLoad: false,
		ws: undefined,
	};
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		const next = () => {
			if (i + 1 >= argv.length) usage(`${a} needs a value`);
			return argv[++i];
		};
		switch (a) {
			case "--relay": opts.relay = next(); break;
			case "--hash": opts.hash = next().toLowerCase().replace(/[^0-9a-f]/g, ""); break;
			case "--moq-clock": opts.moqClock = next(); break;
			case "--clock-url": opts.clockUrl = next(); break;
			case "--chromium": opts.chromium = next(); break;
			case "--scenario": opts.scenario = next(); break;
			case "--timeout": opts.timeout = Number(next()); break;
			case "--netlog": opts.netlog = next(); break;
			case "--only-load": opts.onlyLoad = true; break;
			case "--ws": opts.ws = next(); break;
			case "-h": case "--help": usage("help"); break;
			default: usage(`unknown argument ${a}`);
		}
	}
	if (!opts.onlyLoad) {
		if (!opts.relay) usage("--relay is required");
		if (!opts.hash || opts.hash.length !== 64) usage("--hash must be 64 hex digits (the relay's sha256= fingerprint)");
	}
	if (!["all", "clock-to-browser", "browser-to-clock"].includes(opts.scenario)) usage(`bad --scenario ${opts.scenario}`);
	if (!(opts.timeout > 0)) usage("bad --timeout");
	opts.url = `https://${opts.relay}/`;
	opts.clockUrl ??= opts.url;
	opts.transports = opts.ws ? ["webtransport", "websocket"] : ["webtransport"];
	opts.wsUrl = opts.ws ? `http://${opts.ws}/` : undefined;
	return opts;
}

const opts = parseArgs(process.argv.slice(2));
const t0 = Date.now();
const say = (...args) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...args);

if (!existsSync(BUNDLE)) {
	console.error(`run.mjs: ${BUNDLE} is missing: run tests/browser/install.sh first`);
	process.exit(66);
}
const require = createRequire(path.join(NODE_DIR, "package.json"));
const { chromium } = require("playwright-core");

function findChromium() {
	if (opts.chromium) return opts.chromium;
	// Debian's /usr/bin/chromium is a shell wrapper; the real binary sits beside its libraries.
	for (const p of ["/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
		if (existsSync(p)) return p;
	}
	console.error("run.mjs: no chromium found: run tests/browser/install.sh, or pass --chromium");
	process.exit(66);
}

// A tiny page server on 127.0.0.1: a secure context (loopback), so WebTransport is allowed.
function servePage() {
	const files = {
		"/": { type: "text/html", body: '<!doctype html><meta charset="utf-8"><title>qumo browser test</title><script src="/moq-net.js"></script><script src="/page.js"></script>' },
		"/moq-net.js": { type: "text/javascript", body: readFileSync(BUNDLE) },
		"/page.js": { type: "text/javascript", body: readFileSync(path.join(HERE, "page.js")) },
	};
	const server = http.createServer((req, res) => {
		const p = new URL(req.url, "http://x").pathname;
		if (p === "/favicon.ico") {
			res.writeHead(204).end();
			return;
		}
		const f = files[p];
		if (!f) {
			res.writeHead(404).end();
			return;
		}
		res.writeHead(200, { "content-type": f.type, "cache-control": "no-store" }).end(f.body);
	});
	return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// Every moq-clock still running is stopped when this process ends, however it ends.
const children = new Set();
const killChildren = () => {
	for (const c of children) c.kill("SIGKILL");
};
process.on("exit", killChildren);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
	process.on(sig, () => {
		killChildren();
		process.exit(1);
	});
}

// moq-clock as a child process, its output kept and echoed with a prefix.
function startClock(role, broadcast) {
	const args = ["--url", opts.clockUrl, "--broadcast", broadcast, "--tls-disable-verify", role];
	say(`spawn: ${opts.moqClock} ${args.join(" ")}`);
	const child = spawn(opts.moqClock, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.CLOCK_RUST_LOG ?? "info" } });
	const proc = { child, stdout: [], exited: undefined, waiters: [] };
	children.add(child);
	child.on("exit", () => children.delete(child));
	const onLines = (stream, sink, label) => {
		let buf = "";
		stream.setEncoding("utf8");
		stream.on("data", (chunk) => {
			buf += chunk;
			let nl;
			while ((nl = buf.indexOf("\n")) >= 0) {
				// moq-clock colours its log even into a pipe: drop the ANSI escapes.
				const line = buf.slice(0, nl).replace(/\x1b\[[0-9;]*m/g, "");
				buf = buf.slice(nl + 1);
				say(`[moq-clock ${role} ${label}] ${line}`);
				if (sink) {
					sink.push(line);
					for (const w of proc.waiters) w();
				}
			}
		});
	};
	onLines(child.stdout, proc.stdout, "out");
	onLines(child.stderr, undefined, "err");
	child.on("exit", (code, signal) => {
		proc.exited = { code, signal };
		say(`[moq-clock ${role}] exited code=${code} signal=${signal}`);
		for (const w of proc.waiters) w();
	});
	child.on("error", (err) => {
		proc.exited = { code: -1, signal: String(err) };
		say(`[moq-clock ${role}] failed to start: ${err}`);
		for (const w of proc.waiters) w();
	});
	return proc;
}

function stopClock(proc) {
	if (proc && !proc.exited) proc.child.kill("SIGTERM");
}

// Resolves with the stdout lines that match, once there are `count`; rejects when the
// process exits first or the time is up.
function waitForLines(proc, match, count, ms) {
	return new Promise((resolve, reject) => {
		const check = () => {
			const hits = proc.stdout.filter(match);
			if (hits.length >= count) return done(() => resolve(hits.slice(0, count)));
			if (proc.exited) return done(() => reject(new Error(`moq-clock exited (${JSON.stringify(proc.exited)}) after ${hits.length}/${count} lines`)));
		};
		const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${ms} ms with ${proc.stdout.filter(match).length}/${count} matching lines`))), ms);
		const done = (f) => {
			clearTimeout(timer);
			proc.waiters = proc.waiters.filter((w) => w !== check);
			f();
		};
		proc.waiters.push(check);
		check();
	});
}

const results = [];
function report(name, ok, detail) {
	results.push({ name, ok });
	console.log(`${ok ? "PASS" : "FAIL"}: ${name}: ${detail}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nonce = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
const CLOCK_LINE = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/;

async function clockToBrowser(page, transport) {
	const name = `clock-to-browser (moq-clock publishes, browser subscribes over ${transport})`;
	const broadcast = `clock-${transport}-${nonce}`;
	const clock = startClock("publish", broadcast);
	try {
		await sleep(500);
		if (clock.exited) return report(name, false, `moq-clock publish exited early: ${JSON.stringify(clock.exited)}`);
		const want = 3;
		const r = await page.evaluate((args) => window.subscribeClock(args), {
			url: opts.url, hash: opts.hash, broadcast, track: "seconds", want, timeoutMs: opts.timeout * 1000,
			transport, wsUrl: opts.wsUrl,
		});
		if (!r.ok) return report(name, false, `failed at ${r.step}: ${r.error} (lines so far: ${JSON.stringify(r.lines)})`);
		// Each line is a UTC wall-clock time from moq-clock: check the format and that it is live.
		const bad = r.lines.filter((l) => !CLOCK_LINE.test(l));
		if (bad.length) return report(name, false, `unexpected payloads ${JSON.stringify(bad)}`);
		const skew = r.lines.map((l) => Math.abs(Date.parse(l.replace(" ", "T") + "Z") - Date.now()) / 1000);
		if (Math.max(...skew) > 30) return report(name, false, `frames are not live: ${JSON.stringify(r.lines)} vs now ${new Date().toISOString()}`);
		const distinct = new Set(r.lines).size;
		if (distinct < want) return report(name, false, `repeated frames ${JSON.stringify(r.lines)}`);
		report(name, true, `${r.transport}, ${r.version}; received ${JSON.stringify(r.lines)}`);
	} catch (err) {
		report(name, false, String(err?.stack ?? err));
	} finally {
		stopClock(clock);
	}
}

async function browserToClock(page, transport) {
	const name = `browser-to-clock (browser publishes over ${transport}, moq-clock subscribes)`;
	const broadcast = `browser-${transport}-${nonce}`;
	const tag = `qumo-browser-${transport}-${nonce}`;
	let clock;
	try {
		const r = await page.evaluate((args) => window.startPublish(args), {
			url: opts.url, hash: opts.hash, broadcast, track: "seconds", tag, frames: 3, intervalMs: 300, timeoutMs: 10000,
			transport, wsUrl: opts.wsUrl,
		});
		if (!r.ok) return report(name, false, `failed at ${r.step}: ${r.error}`);
		say(`browser publishing ${broadcast} (${r.transport}, ${r.version})`);
		clock = startClock("subscribe", broadcast);
		// moq-clock's subscriber prints `${base}${frame}` for every frame after a group's first.
		const line = new RegExp(`^${tag} group \\d+: \\d+$`);
		// 4 lines from 3-frame groups: at least two groups, so each new group stream is forwarded too.
		const want = 4;
		const lines = await waitForLines(clock, (l) => line.test(l), want, opts.timeout * 1000);
		const groups = new Set(lines.map((l) => l.replace(/: \d+$/, "")));
		if (groups.size < 2) return report(name, false, `all lines from one group: ${JSON.stringify(lines)}`);
		report(name, true, `${r.transport}, ${r.version}; moq-clock printed ${JSON.stringify(lines)}`);
	} catch (err) {
		report(name, false, String(err?.message ?? err));
	} finally {
		stopClock(clock);
		try {
			const s = await page.evaluate(() => window.stopPublish());
			say(`browser publisher stopped after ${s.groups} groups${s.error ? `, error: ${s.error}` : ""}`);
		} catch (err) {
			say(`stopPublish failed: ${err}`);
		}
	}
}

async function main() {
	const server = await servePage();
	const pageUrl = `http://127.0.0.1:${server.address().port}/`;
	const args = ["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"];
	if (opts.netlog) args.push(`--log-net-log=${opts.netlog}`, "--net-log-capture-mode=Everything");
	const executablePath = findChromium();
	say(`launch: ${executablePath} (headless) ${args.join(" ")}`);
	const browser = await chromium.launch({ executablePath, headless: true, args, timeout: 30000 });
	let failed = false;
	try {
		say(`browser: ${browser.version()}, page ${pageUrl}, relay ${opts.url}`);
		const page = await browser.newPage();
		page.on("console", (msg) => say(`[browser ${msg.type()}] ${msg.text()}`));
		page.on("pageerror", (err) => say(`[browser pageerror] ${err}`));
		await page.goto(pageUrl);
		await page.waitForFunction(() => window.pageReady === true, null, { timeout: 10000 });
		const hasWt = await page.evaluate(() => typeof WebTransport === "function" && window.isSecureContext);
		if (!hasWt) {
			report("page", false, "WebTransport is not available in the page (not a secure context?)");
			return;
		}
		if (opts.onlyLoad) {
			report("page loads @moq/net with WebTransport available", true, `Chromium ${browser.version()}`);
			return;
		}
		for (const transport of opts.transports) {
			if (opts.scenario === "all" || opts.scenario === "clock-to-browser") await clockToBrowser(page, transport);
			if (opts.scenario === "all" || opts.scenario === "browser-to-clock") await browserToClock(page, transport);
		}
	} catch (err) {
		report("harness", false, String(err?.stack ?? err));
	} finally {
		await browser.close().catch(() => {});
		server.close();
		const passed = results.filter((r) => r.ok).length;
		failed = results.length - passed;
		console.log(`${passed} passed, ${failed} failed`);
		process.exitCode = failed ? 1 : 0;
	}
}

const hardLimit = setTimeout(() => {
	console.log("FAIL: run.mjs: overall time limit reached");
	process.exit(1);
}, (opts.timeout * 2 * opts.transports.length + 25) * 1000);
hardLimit.unref();
await main();
