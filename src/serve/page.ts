// The web page at `/`: choose or drop an image, see the crop the network saw and the top-5 as bars.
// Plain HTML, CSS and JS (no build step, no outside resources), served under a strict Content-Security-Policy.

import type { ServeContext } from './context.js';

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Crops smaller than this (in CSS pixels) are shown enlarged. */
const MIN_SHOWN = 224;

export const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function pageHtml(ctx: ServeContext): string {
  const { info } = ctx;
  const pre = info.preprocessing;
  // A small model's crop (28x28, 32x32) is shown enlarged by a whole factor, its pixels kept square and sharp.
  const zoom = pre.crop < MIN_SHOWN ? Math.ceil(MIN_SHOWN / pre.crop) : 1;
  const shown = pre.crop * zoom;
  const notice = info.randomWeights
    ? `<p id="weights" class="warn">Weights: <b>${escape(info.weights)}</b>. This network has not been trained: its labels and probabilities mean nothing.${info.weightsHint ? ` <span id="weights-hint">${escape(info.weightsHint)}</span>` : ''}</p>`
    : `<p id="weights">Weights: ${escape(info.weights)}</p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resnet-onnx: ${escape(info.name)}</title>
<link rel="stylesheet" href="/app.css">
</head>
<body>
<main>
<h1>${escape(info.architecture)}</h1>
<p class="sub">Model <code>${escape(info.name)}</code>. The image's shorter side is resized to ${pre.resize} px and the centre ${pre.crop}&times;${pre.crop} crop is classified.</p>
${notice}${info.quantization ? `\n<p id="precision">Precision: ${escape(info.quantization)}</p>` : ''}
<label id="drop" for="file">
  <input id="file" type="file" accept="image/jpeg,image/png,image/webp,image/gif,image/tiff,image/avif">
  <span>Choose an image, or drop one here</span>
</label>
<p id="status" role="status"></p>
<section id="result" hidden>
  <figure><img id="crop" alt="the crop the network saw" width="${shown}" height="${shown}"${zoom > 1 ? ' class="pixelated"' : ''}><figcaption>the ${pre.crop}&times;${pre.crop} crop the network saw${zoom > 1 ? ` (shown ${zoom}&times; enlarged)` : ''}</figcaption></figure>
  <ol id="top"></ol>
</section>
</main>
<script src="/app.js"></script>
</body>
</html>
`;
}

export const PAGE_CSS = `body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #fafafa; color: #222; }
main { max-width: 760px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; }
.warn { background: #fff4ce; border: 1px solid #e0c060; padding: 0.5em 0.8em; border-radius: 4px; }
#drop { display: block; border: 2px dashed #999; border-radius: 8px; padding: 2em; text-align: center; cursor: pointer; background: #fff; }
#drop.over { border-color: #2a6; background: #efe; }
#drop input { display: block; margin: 0 auto 0.5em; }
#status.error { color: #b00; }
#result { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; margin-top: 1em; }
#result[hidden] { display: none; }
figure { margin: 0; }
#crop { display: block; border: 1px solid #ccc; image-rendering: auto; }
#crop.pixelated { image-rendering: pixelated; }
figcaption { font-size: 0.85em; color: #666; }
#top { flex: 1; min-width: 260px; padding-left: 1.2em; }
#top li { margin-bottom: 0.6em; }
.label { display: block; }
.bar { height: 14px; background: #e4e4e4; border-radius: 3px; overflow: hidden; }
.fill { height: 100%; background: #3a7bd5; }
.pct { font-size: 0.85em; color: #555; }
`;

export const PAGE_JS = `'use strict';
const $ = (id) => document.getElementById(id);
const status = (text, isError) => { $('status').textContent = text; $('status').className = isError ? 'error' : ''; };

async function classify(file) {
  status('Classifying ' + file.name + ' ...', false);
  $('result').hidden = true;
  try {
    const res = await fetch('/classify?topk=5&crop=1', { method: 'POST', headers: { 'Content-Type': file.type || 'application/octet-stream' }, body: file });
    const body = await res.json();
    if (!res.ok) { status('Error ' + res.status + ': ' + (body.error && body.error.message || res.statusText), true); return; }
    $('crop').src = body.crop;
    const list = $('top');
    list.replaceChildren();
    for (const p of body.predictions) {
      const li = document.createElement('li');
      li.className = 'prediction';
      const label = document.createElement('span');
      label.className = 'label';
      label.textContent = p.label + ' (' + p.index + ')';
      const bar = document.createElement('div');
      bar.className = 'bar';
      const fill = document.createElement('div');
      fill.className = 'fill';
      fill.style.width = (100 * p.probability).toFixed(1) + '%';
      fill.dataset.probability = String(p.probability);
      bar.append(fill);
      const pct = document.createElement('span');
      pct.className = 'pct';
      pct.textContent = (100 * p.probability).toFixed(2) + '%';
      li.append(label, bar, pct);
      list.append(li);
    }
    $('result').hidden = false;
    const t = body.timings;
    status(file.name + ': ' + body.image.format + ' ' + body.image.width + 'x' + body.image.height + '; decode ' + t.decodeMs + ' ms, queue ' + t.queueMs + ' ms, inference ' + t.inferenceMs + ' ms (batch of ' + t.batchSize + ')' + (body.trained ? '' : '. Weights: ' + body.weights + ' (untrained)'), false);
  } catch (e) {
    status('Error: ' + e.message, true);
  }
}

$('file').addEventListener('change', (e) => { const f = e.target.files[0]; if (f) classify(f); });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const f = e.dataTransfer.files[0];
  if (f) classify(f);
});
`;
