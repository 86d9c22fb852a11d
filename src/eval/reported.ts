// The accuracy a model's metadata claims for it (a publisher's figure for pulled or imported weights, or the
// training run's own test error), read so that eval can set it beside what it measures, under the same protocol
// where the claim says which.

import type { Preprocessing } from '../models/labels.js';
import type { ModelInfo } from '../serve/model-info.js';

export interface ReportedAccuracy {
  /** Accuracies in [0, 1]; absent when not stated. */
  top1?: number;
  top5?: number;
  /** The side of the square crop the figure was measured at, and the crop's share of the resized shorter side. */
  resolution?: number;
  cropPct?: number;
  /** Who states it (a publisher, a catalogue) and where it was read. */
  source: string;
  /** Whether the figure was measured with this evaluation's resize and crop; absent when the claim does not say. */
  sameProtocol?: boolean;
}

/** A claim before it is compared with an evaluation's protocol. */
export type Claim = Omit<ReportedAccuracy, 'sameProtocol'>;

/**
 * A source of published figures for a model, e.g. the `pull` catalogue keyed on what a pulled model's metadata
 * records. When it answers, it wins over what eval reads from the metadata itself. Register with setReportedLookup.
 */
export type ReportedLookup = (info: ModelInfo) => Claim[] | undefined;

let catalogueLookup: ReportedLookup | undefined;

/** Hook for the catalogue of published weights (src/pull): consulted for every evaluated model. */
export function setReportedLookup(lookup: ReportedLookup | undefined): void {
  catalogueLookup = lookup;
}

const NUM = String.raw`(\d+(?:\.\d+)?)`;
const re = (s: string): RegExp => new RegExp(s, 'i');

/**
 * Figures written as text in a metadata string. Understood forms (case-insensitive): `top-1 error 7.16%`,
 * `top-1 / top-5 error 21.66 / 5.79`, `21.66 / 5.79 top-1 / top-5 error`, `top-1 80.41%`, `80.41% top-1`,
 * `top-5 95.2%`, and `at 224` / `@ 320` for the resolution. The first figure stated is taken.
 */
export function parseReported(text: string): Omit<Claim, 'source'> | undefined {
  const pct = (v: string): number => Number(v) / 100;
  const pair = re(String.raw`top-1\s*/\s*top-5\s+error\s*[:=]?\s*${NUM}\s*%?\s*/\s*${NUM}`).exec(text) ?? re(String.raw`${NUM}\s*%?\s*/\s*${NUM}\s*%?\s+top-1\s*/\s*top-5\s+error`).exec(text);
  let r: Omit<Claim, 'source'> | undefined;
  if (pair) r = { top1: 1 - pct(pair[1]), top5: 1 - pct(pair[2]) };
  else {
    const err1 = re(String.raw`top-1\s+error\s*[:=]?\s*${NUM}\s*%`).exec(text);
    const err5 = re(String.raw`top-5\s+error\s*[:=]?\s*${NUM}\s*%`).exec(text);
    const acc1 = re(String.raw`top-1(?:\s+accuracy)?\s*[:=]?\s*${NUM}\s*%`).exec(text) ?? re(String.raw`${NUM}\s*%\s+top-1(?!\s*(?:/\s*top-5\s+)?error)`).exec(text);
    const acc5 = re(String.raw`top-5(?:\s+accuracy)?\s*[:=]?\s*${NUM}\s*%`).exec(text) ?? re(String.raw`${NUM}\s*%\s+top-5(?!\s+error)`).exec(text);
    const top1 = err1 ? 1 - pct(err1[1]) : acc1 ? pct(acc1[1]) : undefined;
    const top5 = err5 ? 1 - pct(err5[1]) : acc5 ? pct(acc5[1]) : undefined;
    if (top1 !== undefined || top5 !== undefined) r = { ...(top1 !== undefined ? { top1 } : {}), ...(top5 !== undefined ? { top5 } : {}) };
  }
  if (!r) return undefined;
  const at = /(?:\bat|@)\s*(\d{2,4})\b/i.exec(text);
  return at ? { ...r, resolution: Number(at[1]) } : r;
}

const isFraction = (x: unknown): x is number => typeof x === 'number' && x >= 0 && x <= 1;
const isPercent = (x: unknown): x is number => typeof x === 'number' && x >= 0 && x <= 100;
const isSide = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x > 0;

/**
 * The `pretrained` metadata that `pull` writes: JSON whose `reported` lists the publisher's figures as
 * { top1, top5?, resolution, crop, by } with accuracies in percent and `crop` the crop's share of the shorter side.
 */
function pretrainedClaims(text: string | undefined): Claim[] {
  if (text === undefined) return [];
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return [];
  }
  const reported = (v as { reported?: unknown } | null)?.reported;
  if (!Array.isArray(reported)) return [];
  const name = (v as { name?: unknown }).name;
  return reported.flatMap((r: Record<string, unknown>): Claim[] => {
    if (typeof r !== 'object' || r === null || !isPercent(r.top1)) return [];
    return [
      {
        top1: r.top1 / 100,
        ...(isPercent(r.top5) ? { top5: r.top5 / 100 } : {}),
        ...(isSide(r.resolution) ? { resolution: r.resolution } : {}),
        ...(isFraction(r.crop) && r.crop > 0 ? { cropPct: r.crop } : {}),
        source: `${typeof r.by === 'string' ? r.by : 'the publisher'}${typeof name === 'string' ? `, for ${name}` : ''} (metadata 'pretrained')`,
      },
    ];
  });
}

/** What the metadata claims: `pretrained` (pull), a `reported_accuracy` JSON entry, else figures in the `weights` / `source` text. */
export function metadataClaims(info: ModelInfo): Claim[] {
  const pulled = pretrainedClaims(info.metadata.pretrained);
  if (pulled.length > 0) return pulled;
  const json = info.metadata.reported_accuracy;
  if (json !== undefined) {
    try {
      const v = JSON.parse(json) as Record<string, unknown>;
      if (isFraction(v.top1) || isFraction(v.top5))
        return [{ ...(isFraction(v.top1) ? { top1: v.top1 } : {}), ...(isFraction(v.top5) ? { top5: v.top5 } : {}), ...(isSide(v.resolution) ? { resolution: v.resolution } : {}), source: "metadata 'reported_accuracy'" }];
    } catch {
      /* not JSON: the text below may still say something */
    }
  }
  for (const key of ['weights', 'source']) {
    const text = info.metadata[key];
    const r = text === undefined ? undefined : parseReported(text);
    if (r) return [{ ...r, source: `metadata '${key}': ${text.length > 160 ? `${text.slice(0, 157)}...` : text}` }];
  }
  return [];
}

/**
 * The figure to set beside a measurement made with `pre`: the catalogue's claims when it knows the model, else the
 * metadata's; of several, the one measured at the same crop (and crop share), else at the same crop size, else the first.
 */
export function reportedAccuracy(info: ModelInfo, pre?: Pick<Preprocessing, 'resize' | 'crop'>): ReportedAccuracy | undefined {
  const claims = catalogueLookup?.(info) ?? metadataClaims(info);
  if (claims.length === 0) return undefined;
  if (!pre) return claims[0];
  const share = pre.crop / pre.resize;
  const exact = claims.find((c) => c.resolution === pre.crop && (c.cropPct === undefined || Math.abs(c.cropPct - share) < 0.01));
  const sameSize = claims.find((c) => c.resolution === pre.crop);
  const chosen = exact ?? sameSize ?? claims[0];
  return chosen.resolution === undefined ? chosen : { ...chosen, sameProtocol: chosen === exact };
}

/** The claim in words, e.g. `top-1 79.90%, top-5 95.20% at 320 (crop 1)`. */
export function describeReported(r: ReportedAccuracy): string {
  const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;
  const figures = [r.top1 !== undefined ? `top-1 ${pct(r.top1)}` : '', r.top5 !== undefined ? `top-5 ${pct(r.top5)}` : ''].filter((s) => s).join(', ');
  const at = r.resolution !== undefined ? ` at ${r.resolution}${r.cropPct !== undefined ? ` (crop ${r.cropPct})` : ''}` : '';
  const other = r.sameProtocol === false ? '; measured under another protocol than this run (see --resize / --crop)' : '';
  return `${figures}${at}, ${r.source}${other}`;
}
