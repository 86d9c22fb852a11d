// `resnet-onnx eval`: accuracy of the tracked Fashion-MNIST model on Debian's real test split (the training run's
// figure, exactly), the same images as PNG class folders (the server's decoder) giving the same predictions,
// class-folder matching, ten-crop, the reported figure, and bad input with its exit codes.

import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { ClassMatchError, imagenetWnids, matchFolders } from '../src/eval/classes.js';
import { EvalError, evalPreprocessing, evaluateModel, spread } from '../src/eval/evaluate.js';
import { parseReported, reportedAccuracy, setReportedLookup } from '../src/eval/reported.js';
import { type Protocol, viewsOfBytes, viewsOfSample } from '../src/eval/views.js';
import { exportInference } from '../src/export/inference.js';
import { onnx } from '../src/export/proto.js';
import { resolveConfig } from '../src/models/config.js';
import { imagenetLabels, type Preprocessing } from '../src/models/labels.js';
import { readModelInfo } from '../src/serve/model-info.js';
import { DEBIAN_FASHION_MNIST, type InMemoryDataset, type Sample, isInMemory, openDataset } from '../src/train/datasets.js';
import { cifarRecords, gradientImage, writeCifar10 } from './data-writers.js';
import { runCli, tempDir } from './helpers.js';

const MODEL = 'models/preact-resnet20-fashion-mnist.onnx';
const haveFashion = existsSync(join(DEBIAN_FASHION_MNIST, 't10k-images-idx3-ubyte.gz'));

/** The top-1 error the training run recorded at its last evaluation (models/<name>.log.jsonl). */
function recordedTop1Error(): number {
  const lines = readFileSync('models/preact-resnet20-fashion-mnist.log.jsonl', 'utf8').trim().split('\n');
  const evals = lines.map((l) => JSON.parse(l) as { type: string; top1Error?: number }).filter((e) => e.type === 'eval');
  return evals[evals.length - 1].top1Error as number;
}

/** The tracked model with some metadata entries removed, written into `dir` (models/ is never touched). */
function modelWithout(dir: string, keys: string[]): string {
  const m = onnx.ModelProto.decode(readFileSync(MODEL));
  m.metadataProps = (m.metadataProps ?? []).filter((p) => !keys.includes(p.key ?? ''));
  const path = join(dir, `without-${keys.join('-')}.onnx`);
  writeFileSync(path, onnx.ModelProto.encode(m).finish());
  return path;
}

async function writePng(path: string, s: Sample): Promise<void> {
  await sharp(Buffer.from(s.pixels), { raw: { width: s.width, height: s.height, channels: s.channels as 1 | 3 } }).png().toFile(path);
}

describe('models/imagenet-wnids.txt', () => {
  it('holds the 1000 ILSVRC-2012 WordNet ids, unique and sorted, line by line beside the class names', () => {
    const ids = imagenetWnids();
    expect(ids).toHaveLength(1000);
    expect(new Set(ids).size).toBe(1000);
    expect([...ids].sort()).toEqual(ids);
    const names = imagenetLabels();
    expect([ids[0], names[0]]).toEqual(['n01440764', 'tench']);
    expect([ids[999], names[999]]).toEqual(['n15075141', 'toilet tissue']);
    expect([ids[1], names[1]]).toEqual(['n01443537', 'goldfish']);
  });
});

describe('class folders to model outputs', () => {
  const fashion = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

  it('matches WordNet ids for an ImageNet model, class indices, and label text (case, spaces, _ and / ignored)', () => {
    const w = matchFolders(['n01443537', 'n15075141', 'n01440764'], imagenetLabels(), 1000);
    expect(w.by).toBe('wnid');
    expect([w.index.get('n01440764'), w.index.get('n01443537'), w.index.get('n15075141')]).toEqual([0, 1, 999]);
    const i = matchFolders(['0', '9', '10'], [], 11);
    expect(i.by).toBe('index');
    expect(i.index.get('10')).toBe(10);
    const l = matchFolders(['t-shirt_top', 'ankle boot', 'Ankle_Boot2'.slice(0, 10), 'BAG'], fashion, 10);
    expect(l.by).toBe('label');
    expect([l.index.get('t-shirt_top'), l.index.get('ankle boot'), l.index.get('Ankle_Boot'), l.index.get('BAG')]).toEqual([0, 9, 9, 8]);
    expect(matchFolders(['tench', 'goldfish'], imagenetLabels(), 1000).index.get('goldfish')).toBe(1);
  });

  it('names unmatched folders, the schemes it tried, and labels that are ambiguous', () => {
    expect(() => matchFolders(['Trouser', 'Jacket', 'Hat'], fashion, 10)).toThrow(/2 class folders name no class of the model: 'Jacket', 'Hat' \(1 of 3 folders match as labels\)/);
    expect(() => matchFolders(['0', '12'], fashion, 10)).toThrow(/'12'.*class indices 0\.\.9/);
    // Labels that differ only in case or punctuation cannot tell two folders apart: such a folder is refused.
    expect(() => matchFolders(['Crane', 'tench'], ['tench', 'crane', 'CRANE'], 3)).toThrow(/'Crane' \(the model has several classes of that name: use the index\)/);
    expect(() => matchFolders(['Trouser'], [], 10)).toThrow(ClassMatchError);
    expect(() => matchFolders(['Trouser'], [], 10)).toThrow(/no labels metadata, so folders can be named only by index/);
  });
});

describe('the protocol', () => {
  const info = readModelInfo(MODEL);

  it('is the model metadata by default; --resize / --crop override, one alone keeps the ratio', () => {
    expect(evalPreprocessing(info)).toMatchObject({ pre: { resize: 28, crop: 28 }, from: 'model metadata' });
    const imagenetLike = { ...info, preprocessing: { ...info.preprocessing, resize: 320, crop: 320 } };
    expect(evalPreprocessing(imagenetLike, 256, 224).pre).toMatchObject({ resize: 256, crop: 224 });
    expect(evalPreprocessing({ ...info, preprocessing: { ...info.preprocessing, resize: 235, crop: 224 } }, undefined, 288).pre).toMatchObject({ resize: 302, crop: 288 });
    expect(evalPreprocessing(imagenetLike, 256).pre).toMatchObject({ resize: 256, crop: 256 });
    expect(() => evalPreprocessing(imagenetLike, 200, 224)).toThrow(EvalError);
  });

  it('cuts ten crops: 4 corners and centre of the centre square, then the same mirrored', async () => {
    // Identity normalisation on a 1-channel 6x8 sample whose pixel value is its position.
    const pre: Preprocessing = { resize: 6, crop: 4, scale: 1, mean: [0], std: [1], channelOrder: 'L', layout: 'NCHW', interpolation: 'bilinear' };
    const s: Sample = { pixels: Uint8Array.from({ length: 48 }, (_, i) => i), width: 8, height: 6, channels: 1, label: 0 };
    const out = new Float32Array(10 * 16);
    await viewsOfSample(s, { pre, tenCrop: true }, out, 0);
    const win = (left: number, top: number, mirror: boolean): number[] =>
      Array.from({ length: 16 }, (_, k) => {
        const y = Math.floor(k / 4);
        const x = mirror ? 3 - (k % 4) : k % 4;
        return (top + y) * 8 + 1 + left + x; // the centre 6x6 square starts at column 1
      });
    const corners: [number, number][] = [[0, 0], [2, 0], [0, 2], [2, 2], [1, 1]];
    const expected = [false, true].flatMap((m) => corners.flatMap(([l, t]) => win(l, t, m)));
    expect(Array.from(out)).toEqual(expected);
    // The PNG route (the server's decoder) gives the same ten views.
    const png = await sharp(Buffer.from(s.pixels), { raw: { width: 8, height: 6, channels: 1 } }).png().toBuffer();
    const viaPng = new Float32Array(10 * 16);
    await viewsOfBytes(png, { pre, tenCrop: true }, viaPng, 0);
    expect(Array.from(viaPng)).toEqual(expected);
  });

  it('agrees bit for bit with the server route (a lossless PNG through prepareImage) for in-memory samples', async () => {
    const u = (i: number): number => (i * 2654435761) % 251;
    const cases: { s: Sample; pre: Preprocessing }[] = [
      { s: { pixels: Uint8Array.from({ length: 28 * 28 }, (_, i) => u(i)), width: 28, height: 28, channels: 1, label: 0 }, pre: info.preprocessing },
      {
        s: { pixels: Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => u(i + 7)), width: 32, height: 32, channels: 3, label: 0 },
        pre: { resize: 32, crop: 28, scale: 1 / 255, mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26], channelOrder: 'BGR', layout: 'NCHW', interpolation: 'bilinear' },
      },
    ];
    for (const { s, pre } of cases)
      for (const tenCrop of [false, true]) {
        const p: Protocol = { pre, tenCrop };
        const n = (tenCrop ? 10 : 1) * (pre.channelOrder === 'L' ? 1 : 3) * pre.crop * pre.crop;
        const direct = new Float32Array(n);
        const viaPng = new Float32Array(n);
        await viewsOfSample(s, p, direct, 0);
        await viewsOfBytes(await sharp(Buffer.from(s.pixels), { raw: { width: s.width, height: s.height, channels: s.channels as 1 | 3 } }).png().toBuffer(), p, viaPng, 0);
        expect(Buffer.from(direct.buffer).equals(Buffer.from(viaPng.buffer)), `${s.width}x${s.height}x${s.channels} ${pre.channelOrder} ten-crop ${tenCrop}`).toBe(true);
      }
  });
});

describe('the reported figure beside the measured one', () => {
  it('reads the figures that metadata text states', () => {
    expect(parseReported('trained: pre-act ResNet-20 ..., test top-1 error 7.16%')?.top1).toBeCloseTo(0.9284, 10);
    expect(parseReported('fb.resnet.torch ResNet-200: 21.66 / 5.79 top-1 / top-5 error at 224')).toEqual({ top1: expect.closeTo(0.7834, 10), top5: expect.closeTo(0.9421, 10), resolution: 224 });
    expect(parseReported('top-1 / top-5 error 20.1 / 4.8 @ 320')).toMatchObject({ top1: expect.closeTo(0.799, 10), resolution: 320 });
    expect(parseReported('timm resnetv2_50.a1h_in1k, 80.41% top-1 at 224')).toMatchObject({ top1: expect.closeTo(0.8041, 10) });
    expect(parseReported('random-init (seed 0)')).toBeUndefined();
    expect(reportedAccuracy(readModelInfo(MODEL))?.top1).toBeCloseTo(1 - recordedTop1Error() / 100, 10);
  });

  it("picks a pulled model's publisher figure measured under the run's protocol; the catalogue hook answers first", () => {
    const info = readModelInfo(MODEL);
    const pulled = {
      ...info,
      metadata: {
        ...info.metadata,
        pretrained: JSON.stringify({ name: 'resnet200', reported: [{ top1: 78.34, top5: 94.21, resolution: 224, crop: 0.875, by: 'fb.resnet.torch README' }, { top1: 79.9, top5: 95.2, resolution: 320, crop: 1, by: 'the paper, Table 5' }] }),
      },
    };
    expect(reportedAccuracy(pulled, { resize: 320, crop: 320 })).toMatchObject({ top1: expect.closeTo(0.799, 10), top5: expect.closeTo(0.952, 10), resolution: 320, sameProtocol: true, source: expect.stringMatching(/the paper, Table 5, for resnet200/) });
    expect(reportedAccuracy(pulled, { resize: 256, crop: 224 })).toMatchObject({ top1: expect.closeTo(0.7834, 10), sameProtocol: true });
    expect(reportedAccuracy(pulled, { resize: 288, crop: 288 })).toMatchObject({ resolution: 224, sameProtocol: false });
    setReportedLookup((i) => (i.name === info.name ? [{ top1: 0.5, source: 'catalogue entry test' }] : undefined));
    try {
      expect(reportedAccuracy(pulled, { resize: 320, crop: 320 })).toEqual({ top1: 0.5, source: 'catalogue entry test' });
    } finally {
      setReportedLookup(undefined);
    }
  });
});

describe.skipIf(!haveFashion)('the tracked Fashion-MNIST model on Debian\'s real test split', () => {
  let test: InMemoryDataset;
  beforeAll(async () => {
    const d = await openDataset({ kind: 'fashion-mnist', dir: DEBIAN_FASHION_MNIST }, 'test');
    if (!isInMemory(d)) throw new Error('IDX is held in memory');
    test = d;
  });

  it('reports exactly the top-1 the training run recorded (all 10,000 images, --data defaulting to Debian\'s folder)', async () => {
    const r = await runCli('eval', '--model', MODEL, '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { images: number; correct1: number; top1: number; top5: number; protocol: { resize: number; crop: number; crops: number }; data: { path: string; format: string }; reported: { top1: number } };
    expect(j.images).toBe(10000);
    expect(j.data).toMatchObject({ path: DEBIAN_FASHION_MNIST, format: 'idx' });
    expect(j.protocol).toMatchObject({ resize: 28, crop: 28, crops: 1 });
    // 92.84%: the log's last top1Error is 7.16 (to float rounding), i.e. 716 of 10,000 wrong.
    expect(j.correct1).toBe(10000 - Math.round(recordedTop1Error() * 100));
    expect(j.correct1).toBe(9284);
    expect(j.top1).toBe(0.9284);
    expect(j.top5).toBeGreaterThanOrEqual(j.top1);
    expect(j.top5).toBeLessThanOrEqual(1);
    expect(j.reported.top1).toBeCloseTo(0.9284, 10);
  }, 180_000);

  it('gives the same predictions for the same test images written as PNGs into class-index folders', async () => {
    const dir = tempDir('eval-png-');
    const picked = spread(test.length, 200);
    for (const i of picked) {
      const s = test.readSync(i);
      mkdirSync(join(dir, String(s.label)), { recursive: true });
      await writePng(join(dir, String(s.label), `${String(i).padStart(5, '0')}.png`), s);
    }
    const fromIdx = await evaluateModel({ model: MODEL, limit: 200 });
    const fromPng = await evaluateModel({ model: MODEL, data: dir });
    expect(fromPng.data).toMatchObject({ format: 'folder', matchedBy: 'index' });
    expect(fromPng.images).toBe(200);
    expect(fromPng.skipped).toEqual([]);
    // Folder images are in class-then-name order: map each back to its test index by its file name.
    let compared = 0;
    fromPng.predictions.forEach((p, k) => {
      const i = Number(/(\d+)\.png$/.exec(fromPng.where(k))?.[1]);
      expect(p, `test image ${i} (${fromPng.where(k)})`).toBe(fromIdx.predictions[i]);
      expect(p).toBeGreaterThanOrEqual(0);
      compared++;
    });
    expect(compared).toBe(200);
    expect(fromPng.correct1).toBe(fromIdx.correct1);
  }, 120_000);
});


describe('eval on image folders, and bad input', () => {
  /** A 28x28 grey PNG (seeded). */
  const grey = (seed: number): Promise<Buffer> =>
    sharp(Buffer.from(Uint8Array.from({ length: 28 * 28 }, (_, i) => (i * 31 + seed * 97) % 256)), { raw: { width: 28, height: 28, channels: 1 } })
      .png()
      .toBuffer();

  /** Class folders named by label text, two images each, plus the given extra files. */
  async function folder(extra: Record<string, Buffer | string> = {}): Promise<string> {
    const dir = tempDir('eval-folder-');
    for (const [k, cls] of ['Trouser', 'Ankle_boot', 'T-shirt_top'].entries()) {
      mkdirSync(join(dir, cls));
      for (let i = 0; i < 2; i++) writeFileSync(join(dir, cls, `img${i}.png`), await grey(10 * k + i));
    }
    for (const [name, content] of Object.entries(extra)) writeFileSync(join(dir, name), content);
    return dir;
  }

  it('scores label-named folders and prints one JSON object with images, top1, top5 and the protocol', async () => {
    const r = await runCli('eval', '--model', MODEL, '--data', await folder(), '--json', '--per-class');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as Record<string, unknown> & { images: number; top1: number; top5: number; protocol: { text: string }; data: { matchedBy: string }; classes: number; perClass: { label: string; images: number }[]; confused: unknown[] };
    expect(j.images).toBe(6);
    for (const v of [j.top1, j.top5]) expect(v >= 0 && v <= 1).toBe(true);
    expect(j.protocol.text).toMatch(/centre 28x28 crop/);
    expect(j.data.matchedBy).toBe('label');
    expect(j.classes).toBe(10);
    expect(j.perClass.map((c) => [c.label, c.images])).toEqual([['T-shirt/top', 2], ['Trouser', 2], ['Ankle boot', 2]]);
    expect(Array.isArray(j.confused)).toBe(true);
  });

  it('counts and lists unreadable and non-image files instead of failing, and scores the rest', async () => {
    const dir = await folder({ 'Trouser/notes.txt': 'not an image', 'Trouser/cut.png': (await grey(5)).subarray(0, 60) });
    symlinkSync(join(dir, 'gone.png'), join(dir, 'Trouser', 'dangling.png'));
    mkdirSync(join(dir, 'Trouser', 'nested'));
    const r = await runCli('eval', '--model', MODEL, '--data', dir, '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { images: number; skipped: { file: string; reason: string }[] };
    expect(j.images).toBe(6);
    const reasons = Object.fromEntries(j.skipped.map((s) => [s.file.split('/').pop(), s.reason]));
    expect(Object.keys(reasons).sort()).toEqual(['cut.png', 'dangling.png', 'nested', 'notes.txt']);
    expect(reasons['notes.txt']).toMatch(/not a decodable image/);
    expect(reasons['dangling.png']).toMatch(/cannot read the file \(ENOENT\)/);
    expect(r.err).toMatch(/skipped 4 files that could not be read or decoded/);
  });

  it('exits 1 when no image at all can be decoded', async () => {
    const dir = tempDir('eval-junk-');
    mkdirSync(join(dir, '3'));
    writeFileSync(join(dir, '3', 'a.jpg'), 'junk');
    const r = await runCli('eval', '--model', MODEL, '--data', dir);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no image could be evaluated: all 1 failed.*a\.jpg/);
  });

  it('refuses an empty folder, files without class folders, and unmatched folders (exit 2, naming them)', async () => {
    const empty = tempDir('eval-empty-');
    let r = await runCli('eval', '--model', MODEL, '--data', empty);
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/has no class folders \(it is empty\); expected .*<class>\/<image>/)]);
    const flat = tempDir('eval-flat-');
    writeFileSync(join(flat, 'a.png'), await grey(1));
    r = await runCli('eval', '--model', MODEL, '--data', flat);
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/has no class folders \(1 file directly in it, which carry no label\)/)]);
    const emptyClasses = tempDir('eval-empty-classes-');
    mkdirSync(join(emptyClasses, 'Bag'));
    r = await runCli('eval', '--model', MODEL, '--data', emptyClasses);
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/its 1 class folder is empty/)]);
    const wrong = await folder();
    mkdirSync(join(wrong, 'Jacket'));
    r = await runCli('eval', '--model', MODEL, '--data', wrong);
    expect([r.code, r.err]).toEqual([2, expect.stringMatching(/1 class folder names no class of the model: 'Jacket'/)]);
  });

  it('refuses label-named folders for a model without labels, naming what works instead; index folders still work', async () => {
    const dir = tempDir('eval-nolabels-');
    const model = modelWithout(dir, ['labels']);
    const r = await runCli('eval', '--model', model, '--data', await folder());
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/no labels metadata, so folders can be named only by index/);
    const byIndex = tempDir('eval-index-');
    mkdirSync(join(byIndex, '1'));
    writeFileSync(join(byIndex, '1', 'a.png'), await grey(3));
    const ok = await runCli('eval', '--model', model, '--data', byIndex, '--json');
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({ images: 1, data: { matchedBy: 'index' } });
  });

  it('refuses --limit 0, a missing model, a folder as --model, no --model, and a file that is not a model (exit 2)', async () => {
    const dir = await folder();
    const cases: [string[], RegExp][] = [
      [['--model', MODEL, '--data', dir, '--limit', '0'], /--limit 0 evaluates nothing/],
      [['--model', join(dir, 'missing.onnx'), '--data', dir], /--model .*missing\.onnx: no such file/],
      [['--model', dir, '--data', dir], /--model .* is a folder; give a file/],
      [['--data', dir], /--model FILE is required/],
      [['--model', join(dir, 'Trouser', 'img0.png'), '--data', dir], /is not an ONNX model|truncated or not an ONNX model/],
      [['--model', MODEL, '--data', join(dir, 'nowhere')], /--data .*nowhere: no such folder/],
      [['--model', MODEL, '--data', dir, '--resize', '20', '--crop', '24'], /--crop 24 is larger than the shorter side it is cut from \(--resize 20\)/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli('eval', ...args);
      expect([r.code, r.err], args.join(' ')).toEqual([2, expect.stringMatching(message)]);
    }
  });

  it('ten-crop scores 10 views per image; --limit spreads the images over the set', async () => {
    const r = await runCli('eval', '--model', MODEL, '--data', await folder(), '--ten-crop', '--limit', '3', '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { images: number; protocol: { crops: number; text: string } };
    expect(j.images).toBe(3);
    expect(j.protocol.crops).toBe(10);
    expect(j.protocol.text).toMatch(/10 crops 28x28/);
    expect(Array.from(spread(10, 3))).toEqual([0, 3, 6]);
    expect(Array.from(spread(3, 5))).toEqual([0, 1, 2]);
  });
});

describe('an ImageNet model on WordNet-id folders of JPEGs', () => {
  it('matches wnid folders, decodes JPEGs of any size as the server does, and says that random weights mean chance', async () => {
    const dir = tempDir('eval-imagenet-');
    const model = join(dir, 'tiny-imagenet.onnx');
    // A small ImageNet-family net (one unit per stage) with the 1000 ILSVRC labels, evaluated at 72 / 64 to stay fast.
    exportInference(resolveConfig({ dataset: 'imagenet', stages: [1, 1, 1, 1] }), { output: model });
    const data = join(dir, 'val');
    for (const [k, wnid] of ['n01440764', 'n15075141'].entries()) {
      mkdirSync(join(data, wnid), { recursive: true });
      // One smaller than the resize (the upscaling path) and one larger (libvips' downscale).
      for (const [w, h] of [[50, 40], [300, 200]])
        await sharp(gradientImage(w, h), { raw: { width: w, height: h, channels: 3 } }).jpeg().toFile(join(data, wnid, `${w}x${h}-${k}.jpg`));
    }
    const r = await runCli('eval', '--model', model, '--data', dir, '--resize', '72', '--crop', '64', '--json', '--per-class');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as { images: number; data: { matchedBy: string; path: string }; protocol: { resize: number; crop: number; from: string }; classes: number; perClass: { index: number; label: string }[] };
    expect(j.images).toBe(4);
    expect(j.data).toMatchObject({ matchedBy: 'wnid', path: data });
    expect(j.protocol).toMatchObject({ resize: 72, crop: 64, from: 'command line' });
    expect(j.classes).toBe(1000);
    expect(j.perClass.map((c) => [c.index, c.label])).toEqual([[0, 'tench'], [999, 'toilet tissue']]);
    expect(r.err).toMatch(/note: the model's weights are random-init \(seed 0\): expect chance accuracy/);
    const ten = await runCli('eval', '--model', model, '--data', dir, '--resize', '72', '--crop', '64', '--ten-crop', '--json');
    expect(ten.code, ten.err).toBe(0);
    expect(JSON.parse(ten.out)).toMatchObject({ images: 4, protocol: { crops: 10 } });
    // Nothing to default to for ImageNet: --data is required.
    const none = await runCli('eval', '--model', model);
    expect([none.code, none.err]).toEqual([2, expect.stringMatching(/--data is required: the model is for imagenet/)]);
  });
});

describe('CIFAR binary batches through train\'s reader', () => {
  it('detects the format, scores the test batch (colour images through the server\'s grey conversion), and refuses a class count that differs', async () => {
    const dir = tempDir('eval-cifar-');
    writeCifar10(join(dir, 'cifar-10-batches-bin'), 12);
    const r = await runCli('eval', '--model', MODEL, '--data', dir, '--json');
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ images: 12, data: { format: 'cifar', split: 'test', path: join(dir, 'cifar-10-batches-bin') } });
    // The Fashion-MNIST model's names are not CIFAR-10's: scored by index, and said so.
    expect(r.err).toMatch(/note: the model's class names differ from the data's \('T-shirt\/top' vs 'airplane'/);
    const c100 = tempDir('eval-cifar100-');
    writeFileSync(join(c100, 'test.bin'), cifarRecords([[1, 5], [2, 77]], 0));
    const bad = await runCli('eval', '--model', MODEL, '--data', c100);
    expect([bad.code, bad.err]).toEqual([2, expect.stringMatching(/holds 100 classes \(cifar100\) but the model has 10 outputs/)]);
  });
});
