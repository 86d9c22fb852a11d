// The web page at `/` in a real headless browser (Debian's chromium driven by playwright-core): choose an
// image or drop one, see the 320x320 crop the network saw and the top-5 as bars; errors are shown.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportInference } from '../src/export/inference.js';
import { resolveConfig } from '../src/models/config.js';
import { type RunningServer, startServer } from '../src/serve/server.js';
import { SKIMAGE_DATA } from './fixtures/images/make.js';
import { tempDir } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const dir = tempDir('resnet-onnx-browser-');
const model = join(dir, 'tiny-imagenet.onnx');
let server: RunningServer;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does it)`);
  exportInference(resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1], unit: 'basic' }), { output: model });
  writeFileSync(join(dir, 'chelsea.jpg'), await sharp(join(SKIMAGE_DATA, 'chelsea.png')).jpeg({ quality: 92 }).toBuffer());
  // The same JPEG without an extension: the browser gives it no type, and the page sends application/octet-stream.
  writeFileSync(join(dir, 'chelsea'), readFileSync(join(dir, 'chelsea.jpg')));
  writeFileSync(join(dir, 'drawing.svg'), '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400"><circle cx="200" cy="200" r="150"/></svg>');
  server = await startServer({ model, port: 0, logLevel: 'silent' });
  await server.ready;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 900, height: 800 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // Script exceptions and CSP violations; a failed fetch (the 415 below, on purpose) is not a page error.
  page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && pageErrors.push(m.text()));
  page.on('response', (r) => r.status() === 404 && pageErrors.push(`404 ${r.url()}`));
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

async function shows(): Promise<{ crop: { w: number; h: number }; bars: { label: string; width: number; probability: number }[]; status: string }> {
  return page.evaluate(() => {
    const img = document.getElementById('crop') as HTMLImageElement;
    const bars = [...document.querySelectorAll('#top li')].map((li) => {
      const fill = li.querySelector('.fill') as HTMLElement;
      const bar = li.querySelector('.bar') as HTMLElement;
      return { label: li.querySelector('.label')?.textContent ?? '', width: fill.getBoundingClientRect().width / bar.getBoundingClientRect().width, probability: Number(fill.dataset.probability) };
    });
    return { crop: { w: img.naturalWidth, h: img.naturalHeight }, bars, status: document.getElementById('status')?.textContent ?? '' };
  });
}

describe('the web page', () => {
  it('says which model it is and that its weights are random-init', async () => {
    await page.goto(server.url);
    await expect(page.locator('h1').textContent()).resolves.toMatch(/ResNet/);
    await expect(page.locator('#weights').textContent()).resolves.toMatch(/random-init \(seed 0\).*not been trained/s);
  });

  it('choosing an image shows the 320x320 crop the model saw and the top-5 as bars', async () => {
    await page.goto(server.url);
    await page.setInputFiles('#file', join(dir, 'chelsea.jpg'));
    await page.locator('#top li').nth(4).waitFor({ timeout: 20_000 });
    await page.waitForFunction(() => (document.getElementById('crop') as HTMLImageElement).complete && (document.getElementById('crop') as HTMLImageElement).naturalWidth > 0);
    const s = await shows();
    expect(s.crop).toEqual({ w: 320, h: 320 });
    expect(s.bars).toHaveLength(5);
    // The bars are as long as the probabilities say, most probable first, and the labels are ImageNet's.
    for (const b of s.bars) expect(Math.abs(b.width - b.probability)).toBeLessThan(0.01);
    for (let i = 1; i < 5; i++) expect(s.bars[i].probability).toBeLessThanOrEqual(s.bars[i - 1].probability);
    expect(s.bars.every((b) => /\(\d+\)$/.test(b.label))).toBe(true);
    expect(s.status).toMatch(/jpeg 451x300.*random-init/);
    // What the page shows is what /classify answers for the same file.
    const direct = (await (await fetch(`${server.url}/classify?topk=5&crop=1`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg' }, body: readFileSync(join(dir, 'chelsea.jpg')) })).json()) as { predictions: { probability: number }[]; crop: string };
    expect(s.bars.map((b) => b.probability)).toEqual(direct.predictions.map((p) => p.probability));
    // The picture shown is the crop the server classified (test/serve.test.ts compares that crop with PIL's).
    const shownCrop = await page.evaluate(() => (document.getElementById('crop') as HTMLImageElement).src);
    expect(shownCrop).toBe(direct.crop);
    await page.screenshot({ path: join(dir, 'page.png') });
  });

  it('dropping an image on the page works too', async () => {
    await page.goto(server.url);
    const bytes = readFileSync(join(SKIMAGE_DATA, 'coffee.png')).toString('base64');
    await page.evaluate(async (b64) => {
      const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bin], 'coffee.png', { type: 'image/png' }));
      document.getElementById('drop')?.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, bytes);
    await page.locator('#top li').nth(4).waitFor({ timeout: 20_000 });
    const s = await shows();
    expect(s.bars).toHaveLength(5);
    expect(s.status).toMatch(/coffee\.png: png 600x400/);
  });

  it('a JPEG file without extension (no type: sent as application/octet-stream) is chosen or dropped and classified', async () => {
    const sent: (string | undefined)[] = [];
    const record = (r: { url: () => string; headers: () => Record<string, string> }): void => void (r.url().includes('/classify') && sent.push(r.headers()['content-type']));
    page.on('request', record);
    try {
      await page.goto(server.url);
      await page.setInputFiles('#file', join(dir, 'chelsea'));
      await page.locator('#top li').nth(4).waitFor({ timeout: 20_000 });
      const chosen = await shows();
      expect(chosen.bars).toHaveLength(5);
      expect(chosen.status).toMatch(/^chelsea: jpeg 451x300/);
      // Dropped: a File with neither a name extension nor a type.
      await page.goto(server.url);
      const bytes = readFileSync(join(dir, 'chelsea')).toString('base64');
      await page.evaluate(async (b64) => {
        const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bin], 'photo'));
        document.getElementById('drop')?.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      }, bytes);
      await page.locator('#top li').nth(4).waitFor({ timeout: 20_000 });
      const dropped = await shows();
      expect(dropped.status).toMatch(/^photo: jpeg 451x300/);
      // The same predictions as the .jpg file sent as image/jpeg.
      const direct = (await (await fetch(`${server.url}/classify?topk=5`, { method: 'POST', headers: { 'Content-Type': 'image/jpeg' }, body: readFileSync(join(dir, 'chelsea.jpg')) })).json()) as { predictions: { probability: number }[] };
      expect(dropped.bars.map((b) => b.probability)).toEqual(direct.predictions.map((p) => p.probability));
      expect(chosen.bars.map((b) => b.probability)).toEqual(direct.predictions.map((p) => p.probability));
      expect(sent).toEqual(['application/octet-stream', 'application/octet-stream']);
    } finally {
      page.off('request', record);
    }
  });

  it('a refused file (SVG) shows the server\'s error, not a broken page', async () => {
    await page.goto(server.url);
    await page.setInputFiles('#file', join(dir, 'drawing.svg'));
    await page.waitForFunction(() => document.getElementById('status')?.className === 'error', undefined, { timeout: 20_000 });
    const s = await shows();
    expect(s.status).toMatch(/^Error 415: SVG images are not served/);
    expect(await page.locator('#result').isHidden()).toBe(true);
  });

  it("a small model's crop (32x32) is shown enlarged with square, sharp pixels (image-rendering: pixelated)", async () => {
    const small = join(dir, 'tiny-cifar10.onnx');
    exportInference(resolveConfig({ dataset: 'cifar10', stages: [1], unit: 'basic' }), { output: small });
    const cifar = await startServer({ model: small, port: 0, logLevel: 'silent' });
    try {
      await cifar.ready;
      await page.goto(cifar.url);
      await page.setInputFiles('#file', join(dir, 'chelsea.jpg'));
      await page.locator('#top li').nth(4).waitFor({ timeout: 20_000 });
      await page.waitForFunction(() => (document.getElementById('crop') as HTMLImageElement).complete && (document.getElementById('crop') as HTMLImageElement).naturalWidth > 0);
      const shown = await page.evaluate(() => {
        const img = document.getElementById('crop') as HTMLImageElement;
        const box = img.getBoundingClientRect();
        return { natural: [img.naturalWidth, img.naturalHeight], css: [Math.round(box.width), Math.round(box.height)], rendering: getComputedStyle(img).imageRendering, caption: img.nextElementSibling?.textContent ?? '' };
      });
      expect(shown.natural).toEqual([32, 32]);
      // 7 x 32 = 224 CSS pixels (plus the 1 px border on each side).
      expect(shown.css).toEqual([226, 226]);
      expect(shown.rendering).toBe('pixelated');
      expect(shown.caption).toMatch(/32\u00d732 crop .*shown 7\u00d7 enlarged/);
    } finally {
      await cifar.close();
    }
  });

  it('ran without script errors under the page\'s Content-Security-Policy', () => {
    expect(pageErrors).toEqual([]);
  });
});
