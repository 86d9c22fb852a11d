// Which output of the network a class folder stands for: folders are named by ILSVRC-2012 WordNet id
// (n01440764), by class index (0 .. N-1) or by the label text the model's metadata holds ("Ankle boot").

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { imagenetLabels } from '../models/labels.js';
import { modelsDir } from '../util/paths.js';

let wnids: string[] | undefined;

/** The 1000 ILSVRC-2012 WordNet ids in the standard order, line by line beside models/imagenet-classes.txt. */
export function imagenetWnids(): string[] {
  if (!wnids) {
    const path = join(modelsDir(), 'imagenet-wnids.txt');
    const ids = readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0);
    if (ids.length !== 1000 || ids.some((id) => !/^n\d{8}$/.test(id))) throw new Error(`${path} must hold 1000 WordNet ids (n01440764 ...), one a line; it has ${ids.length} lines`);
    wnids = ids;
  }
  return wnids;
}

/** How a set of class folders was matched: the scheme and, per folder name, the output index. */
export interface FolderMatch {
  by: 'wnid' | 'index' | 'label';
  index: Map<string, number>;
}

/** Class folders that name no output of the model (exit 2); the message names some of them and what was expected. */
export class ClassMatchError extends Error {
  override name = 'ClassMatchError';
}

/** Label text as a folder can hold it: case, spaces, `_`, `-` and `/` (not allowed in a name) do not matter. */
export function labelKey(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

function isImagenet(labels: readonly string[], classes: number): boolean {
  if (classes !== 1000) return false;
  if (labels.length === 0) return true; // 1000 outputs without names: the standard order is the only one in use
  const known = imagenetLabels();
  return labels.length === 1000 && labels.every((l, i) => l === known[i]);
}

/**
 * Matches folder names to the model's outputs. Every folder must match under one scheme, tried in the order
 * WordNet id (ImageNet models), class index, label text; otherwise ClassMatchError names folders that did not.
 */
export function matchFolders(folders: readonly string[], labels: readonly string[], classes: number): FolderMatch {
  const tries: { by: FolderMatch['by']; index: Map<string, number>; missed: string[]; why: string }[] = [];
  const attempt = (by: FolderMatch['by'], lookup: (name: string) => number | undefined, why: string): FolderMatch | undefined => {
    const index = new Map<string, number>();
    const missed: string[] = [];
    for (const f of folders) {
      const k = lookup(f);
      if (k === undefined) missed.push(f);
      else index.set(f, k);
    }
    tries.push({ by, index, missed, why });
    return missed.length === 0 ? { by, index } : undefined;
  };

  if (isImagenet(labels, classes)) {
    const byId = new Map(imagenetWnids().map((id, i) => [id, i]));
    const m = attempt('wnid', (f) => byId.get(f), 'ILSVRC-2012 WordNet ids (n01440764 = tench ... n15075141 = toilet tissue; models/imagenet-wnids.txt)');
    if (m) return m;
  }
  const m = attempt('index', (f) => (/^\d+$/.test(f) && Number(f) < classes ? Number(f) : undefined), `class indices 0..${classes - 1}`);
  if (m) return m;

  const ambiguous = new Set<string>();
  if (labels.length > 0) {
    const byLabel = new Map<string, number>();
    labels.forEach((l, i) => {
      const key = labelKey(l);
      if (byLabel.has(key)) ambiguous.add(key);
      else byLabel.set(key, i);
    });
    const m2 = attempt('label', (f) => (ambiguous.has(labelKey(f)) ? undefined : byLabel.get(labelKey(f))), `the model's label text (${labels.slice(0, 3).map((l) => JSON.stringify(l)).join(', ')}, ...; case, spaces, _ - / ignored)`);
    if (m2) return m2;
  }

  // Report against the scheme that matched most folders: that is most likely what the user meant.
  const best = tries.reduce((a, b) => (b.index.size > a.index.size ? b : a));
  const some = best.missed.slice(0, 5).map((f) => `'${f}'${ambiguous.has(labelKey(f)) ? ' (the model has several classes of that name: use the index)' : ''}`);
  const more = best.missed.length > 5 ? ` and ${best.missed.length - 5} more` : '';
  const schemes = tries.map((t) => t.why).join('; or ');
  const noLabels = labels.length === 0 ? ` The model has no labels metadata, so folders can be named only by index${classes === 1000 ? ' or WordNet id' : ''}.` : '';
  const matched = best.index.size > 0 ? ` (${best.index.size} of ${folders.length} folders match as ${best.by === 'wnid' ? 'WordNet ids' : best.by === 'index' ? 'class indices' : 'labels'})` : '';
  throw new ClassMatchError(`${best.missed.length} class folder${best.missed.length > 1 ? 's' : ''} name${best.missed.length > 1 ? '' : 's'} no class of the model: ${some.join(', ')}${more}${matched}. Name every folder by one of: ${schemes}.${noLabels}`);
}
