// End-to-end test of the labeling page in Debian's Chromium, driven by playwright-core:
// the page's kernel outputs (WebGPU on SwiftShader, then the CPU/wasm fallback) must equal
// `kiln transform` on the same files and spec; labels are assigned from the keyboard, survive
// a reload, export as CSV, and are saved by `kiln serve`.
//
//   KILN_BIN=path/to/kiln node --test tests/browser/
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, copyFileSync, readFileSync, writeFileSync, existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const kiln = process.env.KILN_BIN || join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, ".cache/kiln-target"), "debug/kiln");

const AUDIO_SPEC = { ops: [
  { op: "load_audio" }, { op: "stft", n_fft: 400, hop_length: 160 }, { op: "magnitude", power: 2.0 },
  { op: "mel", n_mels: 64 }, { op: "power_to_db" },
] };
const IMAGE_SPEC = { ops: [
  { op: "decode_image", mode: "RGB" }, { op: "resize", shorter_side: 96, filter: "bicubic" },
  { op: "center_crop", height: 96, width: 96 },
] };

function npy(path) {
  const b = readFileSync(path);
  const len = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + len).toString();
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(10 + len);
  const data = header.includes("<f4")
    ? Array.from(new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.length)))
    : Array.from(body);
  return { shape, data };
}

function freePort() {
  return new Promise((ok) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

async function waitFor(url) {
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(url)).ok) return; } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

const CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic"];

test("labeling page computes what kiln computes, on WebGPU and on the wasm fallback", async () => {
  assert.ok(existsSync(kiln), `kiln binary not found at ${kiln} (set KILN_BIN)`);
  const work = mkdtempSync(join(tmpdir(), "kiln-browser-"));
  const data = join(work, "data");
  mkdirSync(join(data, "clips"), { recursive: true });
  copyFileSync(join(root, "examples/tones_16k.wav"), join(data, "clips/tones.wav"));
  copyFileSync(join(root, "examples/gradient_240x180.png"), join(data, "gradient.png"));
  // A 4:2:0 JPEG: the page's wasm build runs the same pure-Rust decoder, so its pixels equal
  // the native ones (and so Pillow's) exactly.
  copyFileSync(join(root, "../shared/refdata/public/inputs/img_jpeg_rgb_640x480_q90.jpg"), join(data, "photo.jpg"));
  writeFileSync(join(work, "audio.json"), JSON.stringify(AUDIO_SPEC));
  writeFileSync(join(work, "image.json"), JSON.stringify(IMAGE_SPEC));
  const native = {
    "clips/tones.wav": (execFileSync(kiln, ["transform", "--spec", join(work, "audio.json"), join(data, "clips/tones.wav"), "-o", join(work, "a.npy")]), npy(join(work, "a.npy"))),
    "gradient.png": (execFileSync(kiln, ["transform", "--spec", join(work, "image.json"), join(data, "gradient.png"), "-o", join(work, "i.npy")]), npy(join(work, "i.npy"))),
    "photo.jpg": (execFileSync(kiln, ["transform", "--spec", join(work, "image.json"), join(data, "photo.jpg"), "-o", join(work, "j.npy")]), npy(join(work, "j.npy"))),
  };
  const port = await freePort();
  const server = spawn(kiln, ["serve", "--dir", data, "--listen", `127.0.0.1:${port}`], { stdio: "inherit" });
  try {
    await waitFor(`http://127.0.0.1:${port}/`);
    for (const [mode, flags] of [["webgpu", ["--enable-unsafe-webgpu"]], ["cpu", []]]) {
      const profile = mkdtempSync(join(tmpdir(), "kiln-chromium-"));
      const browser = await chromium.launchPersistentContext(profile, {
        executablePath: "/usr/bin/chromium", headless: true, args: [...CHROMIUM_ARGS, ...flags],
        viewport: { width: 1200, height: 700 },
      });
      try {
        const page = browser.pages()[0] || (await browser.newPage());
        page.on("console", (m) => { if (m.type() === "error") console.error(`[page ${mode}]`, m.text()); });
        await page.goto(`http://127.0.0.1:${port}/`);
        await page.waitForFunction(() => window.kilnTest && window.kilnTest.ready);
        await page.evaluate(() => window.kilnTest.ready);
        assert.equal(await page.evaluate(() => window.kilnTest.backend()), mode, `${mode} run used the wrong backend`);
        assert.deepEqual(await page.evaluate(() => window.kilnTest.files()), ["clips/tones.wav", "gradient.png", "photo.jpg"]);
        await page.evaluate(([a, i]) => window.kilnTest.setSpecs(a, i), [AUDIO_SPEC, IMAGE_SPEC]);
        for (const [name, want] of Object.entries(native)) {
          const got = await page.evaluate((n) => window.kilnTest.compute(n), name);
          assert.equal(got.backend, mode);
          assert.deepEqual(got.shape, want.shape, `${mode} ${name} shape`);
          let worst = 0;
          got.data.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - want.data[i])); });
          // dB of the mel spectrogram: 0.05 dB (f32 FFT on another device); uint8 pixels: exact.
          const allowed = name.endsWith(".wav") ? (mode === "cpu" ? 1e-3 : 0.05) : 0;
          assert.ok(worst <= allowed, `${mode} ${name}: max |page - kiln transform| = ${worst} > ${allowed}`);
          console.log(`${mode} ${name}: shape ${got.shape}, max |page - native| ${worst}, kernel ${got.ms.toFixed(1)} ms`);
        }
        // Keyboard labeling: 1 on the first item, down, 2, undo, 3.
        await page.evaluate(() => window.kilnTest.select(0));
        await page.locator("body").press("1");
        await page.locator("body").press("ArrowDown");
        await page.locator("body").press("2");
        await page.locator("body").press("u");
        await page.locator("body").press("3");
        const expected = { "clips/tones.wav": "speech", "gradient.png": "noise" };
        assert.deepEqual(await page.evaluate(() => window.kilnTest.labels()), expected);
        await page.reload();
        await page.waitForFunction(() => window.kilnTest && window.kilnTest.ready);
        await page.evaluate(() => window.kilnTest.ready);
        assert.deepEqual(await page.evaluate(() => window.kilnTest.labels()), expected, "labels lost on reload");
        const csv = await page.evaluate(() => window.kilnTest.exportCsv());
        assert.equal(csv, "path,label\nclips/tones.wav,speech\ngradient.png,noise\n");
        assert.deepEqual(JSON.parse(await page.evaluate(() => window.kilnTest.exportJson())),
          [{ path: "clips/tones.wav", label: "speech" }, { path: "gradient.png", label: "noise" }]);
        await page.waitForFunction(() => true);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(readFileSync(join(data, "labels.csv"), "utf8"), csv, "kiln serve did not save the labels");
        if (mode === "webgpu") {
          await page.evaluate(() => window.kilnTest.select(0));
          await page.waitForFunction(() => window.kilnTest.status().includes("kernel"));
          const shot = join(process.env.KILN_SCREENSHOT_DIR || work, "labeling-spectrogram.png");
          await page.screenshot({ path: shot });
          console.log(`screenshot: ${shot}`);
        }
      } finally {
        await browser.close();
      }
    }
  } finally {
    server.kill();
  }
});
