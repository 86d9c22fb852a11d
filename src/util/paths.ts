// Locates files shipped with the package (models/, class lists) whether run from src/ or dist/src/.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'resnet-onnx') return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the resnet-onnx package root (package.json)');
    dir = up;
  }
}

export function modelsDir(): string {
  return join(packageRoot(), 'models');
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}
