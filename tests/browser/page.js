// The test page's half of tests/browser: runs inside headless Chromium, after
// moq-net-<version>.js (the esbuild bundle of @moq/net that sets `window.Moq`).
// run.mjs drives it through page.evaluate; every step logs with console.log so
// run.mjs can print what the browser saw.
"use strict";

const log = (...args) => console.log("[page]", ...args);

function describe(err) {
	if (err === undefined || err === null) return String(err);
	if (err instanceof AggregateError) {
		return `${err.message}: [${err.errors.map(describe).join("; ")}]`;
	}
	const parts = [`${err.name ?? "Error"}: ${err.message ?? err}`];
	// WebTransportError carries where it came from and the peer's code, if any.
	if (err.source !== undefined) parts.push(`source=${err.source}`);
	if (err.streamErrorCode !== undefined && err.streamErrorCode !== null) parts.push(`streamErrorCode=${err.streamErrorCode}`);
	if (err.code !== undefined) parts.push(`code=${err.code}`);
	if (err.cause !== undefined) parts.push(`cause=${describe(err.cause)}`);
	return parts.join(" ");
}

function deadline(ms, what) {
	let timer;
	const promise = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
	});
	return { promise, cancel: () => clearTimeout(timer) };
}

async function withTimeout(ms, what, promise) {
	const d = deadline(ms, what);
	try {
		return await Promise.race([promise, d.promise]);
	} finally {
		d.cancel();
	}
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function hexToBytes(hex) {
	const clean = hex.replace(/[^0-9a-fA-F]/g, "");
	const out = new Uint8Array(clean.length / 2);
	for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
	return out;
}

// The WebTransport sub-protocols @moq/net 0.3.4 offers, in its order (connection/connect.js).
const MOQ_PROTOCOLS = [
	"moq-lite-05",
	"moq-lite-04",
	"moq-lite-03",
	"moql",
	"moqt-20",
	"moqt-19",
	"moqt-18",
	"moqt-17",
	"moqt-16",
	"moqt-15",
];

// A bare WebTransport session, no MoQ, opened only after a failed connect: tells a handshake failure (certificate, ALPN h3,
// SETTINGS, extended CONNECT) apart from a MoQ failure, and shows the negotiated
// `wt-protocol`.
async function probeWebTransport({ url, hash, timeoutMs }) {
	const wt = new WebTransport(url, {
		serverCertificateHashes: [{ algorithm: "sha-256", value: hexToBytes(hash) }],
		protocols: MOQ_PROTOCOLS,
		allowPooling: false,
	});
	wt.closed.catch(() => {});
	try {
		await withTimeout(timeoutMs, "WebTransport ready", wt.ready);
		const protocol = wt.protocol;
		log(`webtransport probe: ready, protocol=${JSON.stringify(protocol)}`);
		wt.close({ closeCode: 0, reason: "probe done" });
		return { ok: true, protocol };
	} catch (err) {
		const error = describe(err);
		log(`webtransport probe: failed: ${error}`);
		try {
			wt.close();
		} catch {}
		return { ok: false, error };
	}
}

// One transport only, so that a pass says which one works: `webtransport` with the
// WebSocket fallback off, or `websocket` (qmux over `wsUrl`) with WebTransport hidden
// from @moq/net, as in a browser that lacks it.
async function connect({ url, hash, timeoutMs, transport = "webtransport", wsUrl }) {
	const websocket = transport === "websocket";
	const hidden = globalThis.WebTransport;
	if (websocket) globalThis.WebTransport = undefined;
	let conn;
	try {
		conn = await Moq.Connection.connect(new URL(url), {
			webtransport: { serverCertificateHashes: [{ algorithm: "sha-256", value: hash }] },
			websocket: websocket ? { enabled: true, url: new URL(wsUrl), delay: 0 } : { enabled: false },
			signal: AbortSignal.timeout(timeoutMs),
		});
	} finally {
		globalThis.WebTransport = hidden;
	}
	log(`connected: url=${conn.url} version=${conn.version} transport=${conn.transport}`);
	if (conn.transport !== transport) {
		conn.close();
		throw new Error(`connected over ${conn.transport}, not ${transport}`);
	}
	return conn;
}

// @moq/net's connect failure alone is often an opaque AggregateError: add what a bare
// WebTransport session to the same URL says.
async function connectFailure(err, { url, hash, transport }) {
	const error = describe(err);
	log(`connect failed: ${error}`);
	if (transport === "websocket") return error;
	const probe = await probeWebTransport({ url, hash, timeoutMs: 5000 });
	return probe.ok
		? `${error}; a bare WebTransport session does open (wt-protocol ${JSON.stringify(probe.protocol)}), so the MoQ handshake failed`
		: `${error}; a bare WebTransport session fails too: ${probe.error}`;
}

async function waitAnnounced(conn, path, timeoutMs) {
	const announced = conn.announced(Moq.Path.empty());
	try {
		return await withTimeout(
			timeoutMs,
			`announce of ${path}`,
			(async () => {
				for (;;) {
					const ev = await announced.next();
					if (!ev) throw new Error("announce stream ended");
					log(`announce: path=${ev.path} active=${ev.active}`);
					if (ev.path === path && ev.active) return;
				}
			})(),
		);
	} finally {
		announced.close();
	}
}

// Scenario 1: subscribe to `broadcast`/`track` as published by moq-clock and return the
// first `want` lines, each rebuilt the way moq-clock's subscriber prints them (a group's
// first frame is the base "YYYY-MM-DD HH:MM:", each later frame the seconds "SS").
window.subscribeClock = async ({ url, hash, broadcast, track, want, timeoutMs, transport, wsUrl }) => {
	const started = performance.now();
	const left = () => Math.max(1, timeoutMs - (performance.now() - started));
	let conn;
	try {
		conn = await connect({ url, hash, timeoutMs: Math.min(10000, left()), transport, wsUrl });
	} catch (err) {
		return { ok: false, step: "connect", error: await connectFailure(err, { url, hash, transport }), lines: [] };
	}
	const lines = [];
	try {
		const path = Moq.Path.from(broadcast);
		await waitAnnounced(conn, path, left());
		const consumer = conn.consume(path);
		const sub = consumer.subscribe(track, {});
		await withTimeout(
			left(),
			`${want} frames of ${broadcast}/${track}`,
			(async () => {
				while (lines.length < want) {
					const group = await sub.recvGroup();
					if (!group) throw new Error("track ended");
					log(`group ${group.sequence}`);
					const base = await group.readString();
					if (base === undefined) continue;
					for (;;) {
						const s = await group.readString();
						if (s === undefined) break;
						log(`frame: ${JSON.stringify(base + s)}`);
						lines.push(base + s);
						if (lines.length >= want) break;
					}
					group.close();
				}
			})(),
		);
		sub.close();
		consumer.close();
		return { ok: true, version: conn.version, transport: conn.transport, lines };
	} catch (err) {
		return { ok: false, step: "subscribe", error: describe(err), version: conn.version, lines };
	} finally {
		conn.close();
	}
};

// Scenario 2: publish `broadcast`/`track` in moq-clock's format until stopPublish():
// one group every `frames` frames, first frame the base `${tag} group N: `, then the
// frames "0", "1", ... So moq-clock's subscriber prints `${tag} group N: K`. Short
// groups mean a subscriber that joins mid-group still gets a whole group soon after.
let publishing;
window.startPublish = async ({ url, hash, broadcast, track, tag, frames, intervalMs, timeoutMs, transport, wsUrl }) => {
	let conn;
	try {
		conn = await connect({ url, hash, timeoutMs, transport, wsUrl });
	} catch (err) {
		return { ok: false, step: "connect", error: await connectFailure(err, { url, hash, transport }) };
	}
	const producer = new Moq.Broadcast.Producer();
	const trackProducer = producer.createTrack(track);
	conn.publish(Moq.Path.from(broadcast), producer);
	const state = { stop: false, groups: 0, error: undefined };
	state.loop = (async () => {
		try {
			while (!state.stop) {
				const group = trackProducer.appendGroup();
				group.writeString(`${tag} group ${state.groups}: `);
				for (let i = 0; i < frames && !state.stop; i++) {
					group.writeString(String(i));
					await sleep(intervalMs);
				}
				group.close();
				state.groups++;
			}
		} catch (err) {
			state.error = describe(err);
			log(`publish loop failed: ${state.error}`);
		}
	})();
	conn.closed.then(
		() => log("publisher session closed"),
		(err) => log(`publisher session closed: ${describe(err)}`),
	);
	publishing = { conn, producer, trackProducer, state };
	return { ok: true, version: conn.version, transport: conn.transport };
};

window.stopPublish = async () => {
	if (!publishing) return { groups: 0 };
	const { conn, producer, trackProducer, state } = publishing;
	publishing = undefined;
	state.stop = true;
	await state.loop;
	trackProducer.close();
	producer.close();
	conn.close();
	return { groups: state.groups, error: state.error };
};

window.pageReady = true;
log(`@moq/net loaded, WebTransport ${typeof WebTransport === "function" ? "available" : "MISSING"}`);
