// What a network of the family is: depth tables of the paper (as data), variants, and validation of a
// user's choice into one resolved ResNetConfig.

export type Family = 'cifar' | 'imagenet';
/** The dataset a net is built for. MNIST-style (28x28 grey) data use the CIFAR family's 3-stage nets. */
export type Dataset = 'cifar10' | 'cifar100' | 'imagenet' | 'fashion-mnist' | 'mnist';
export const DATASETS: readonly Dataset[] = ['cifar10', 'cifar100', 'imagenet', 'fashion-mnist', 'mnist'];
export type UnitKind = 'basic' | 'bottleneck' | 'single';

/** Fig. 4 / Table 2: where BN and ReLU sit relative to the addition. */
export const ACTIVATIONS = ['full-preact', 'original', 'bn-after-add', 'relu-before-add', 'relu-only-preact'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

/** Fig. 2 / Table 1: what happens on the shortcut of units whose shape does not change. */
export const SHORTCUTS = ['identity', 'scaling', 'exclusive-gating', 'shortcut-gating', 'conv1x1', 'dropout'] as const;
export type ShortcutKind = (typeof SHORTCUTS)[number];

export interface Shortcut {
  kind: ShortcutKind;
  /** lambda of constant scaling (Fig. 2b), default 0.5; 0 drops the shortcut of identity units (Table 1's plain net). */
  scale: number;
  /** Constant scaling: also scale F by 1 - lambda. */
  scaleResidual: boolean;
  /** Initial bias b_g of the gates (Fig. 2c, d), default -6 (the paper tries 0 ... -10). */
  gateBias: number;
  /** Dropout ratio of Fig. 2f, default 0.5. */
  dropout: number;
}

export const DEFAULT_SHORTCUT: Shortcut = { kind: 'identity', scale: 0.5, scaleResidual: false, gateBias: -6, dropout: 0.5 };

export interface Stage {
  units: number;
  /** Width m of the stage's 3x3 convs; a bottleneck outputs 4m. */
  width: number;
  stride: number;
}

export interface ResNetConfig {
  family: Family;
  dataset: Dataset;
  /** Depth as the paper names it (weighted layers), or null for custom stage lists. */
  depth: number | null;
  classes: number;
  inChannels: number;
  unit: UnitKind;
  stages: Stage[];
  activation: Activation;
  shortcut: Shortcut;
  /** How a shape-changing shortcut is made: 'A' zero-pad (CIFAR basic default) or 'B' 1x1 conv projection. */
  projection: 'A' | 'B';
  /** Which conv of a downsampling bottleneck carries the stride: '1x1' (authors' CIFAR code) or '3x3'. */
  strideOn: '1x1' | '3x3';
  /** How a network imported from published weights differs from the SPEC's; absent for the clean family. */
  layout?: Layout;
}

/**
 * Structural quirks of published pre-activation ResNets (SPEC, "Public pre-activation ImageNet weights").
 * The defaults (DEFAULT_LAYOUT) are the SPEC's network; a config without `layout` uses them.
 */
export interface Layout {
  /** Who laid the network out this way, for names and messages, e.g. 'fb.resnet.torch'. */
  origin: string;
  /**
   * BN-ReLU after the ImageNet stem conv, before max pooling (SPEC). false: timm ResNetV2, whose max pool reads
   * the raw conv output and whose stage 1 unit 1 pre-activates its own input.
   */
  stemNorm: boolean;
  /**
   * Where a stage's first unit pre-activates: 'split' = once before the split, and the shortcut reads the
   * pre-activated tensor (SPEC); 'branch' = at the start of the residual branch like every other unit, and the
   * shortcut reads the raw input (fb.resnet.torch's released ResNet-200); 'split-if-projecting' = 'split' where
   * the unit projects its shortcut, 'branch' where the shortcut is the identity (timm's ResNetV2).
   */
  firstPreact: 'split' | 'branch' | 'split-if-projecting';
  /** A BN after each projection conv (fb.resnet.torch's ResNet-200), named `shortcut_bn`. */
  projectionNorm: boolean;
  /** Every conv carries a bias (Torch convolutions unless `:noBias()`). */
  convBias: boolean;
}

export const DEFAULT_LAYOUT: Layout = {
  origin: 'resnet-onnx',
  stemNorm: true,
  firstPreact: 'split',
  projectionNorm: false,
  convBias: false,
};

export const CIFAR_DEPTHS: Readonly<Record<number, { unit: UnitKind; n: number }>> = {
  20: { unit: 'basic', n: 3 },
  32: { unit: 'basic', n: 5 },
  44: { unit: 'basic', n: 7 },
  56: { unit: 'basic', n: 9 },
  110: { unit: 'basic', n: 18 },
  1202: { unit: 'basic', n: 200 },
  164: { unit: 'bottleneck', n: 18 },
  1001: { unit: 'bottleneck', n: 111 },
};

export const IMAGENET_DEPTHS: Readonly<Record<number, { unit: UnitKind; units: number[] }>> = {
  18: { unit: 'basic', units: [2, 2, 2, 2] },
  34: { unit: 'basic', units: [3, 4, 6, 3] },
  50: { unit: 'bottleneck', units: [3, 4, 6, 3] },
  101: { unit: 'bottleneck', units: [3, 4, 23, 3] },
  152: { unit: 'bottleneck', units: [3, 8, 36, 3] },
  200: { unit: 'bottleneck', units: [3, 24, 36, 3] },
};

const CIFAR_WIDTHS = [16, 32, 64];
const IMAGENET_WIDTHS = [64, 128, 256, 512];

export const DATASET_CLASSES: Readonly<Record<Dataset, number>> = { cifar10: 10, cifar100: 100, imagenet: 1000, 'fashion-mnist': 10, mnist: 10 };
const DATASET_CHANNELS: Readonly<Record<Dataset, number>> = { cifar10: 3, cifar100: 3, imagenet: 3, 'fashion-mnist': 1, mnist: 1 };
const DATASET_NAMES: Readonly<Record<Dataset, string>> = { cifar10: 'CIFAR-10', cifar100: 'CIFAR-100', imagenet: 'ImageNet', 'fashion-mnist': 'Fashion-MNIST', mnist: 'MNIST' };

/** An error in what the user asked for; the CLI prints its message and exits non-zero. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface ModelRequest {
  depth?: number;
  dataset?: Dataset;
  classes?: number;
  unit?: UnitKind;
  /** CIFAR: units per stage n (one number); ImageNet: units of each stage. */
  stages?: number[];
  activation?: Activation;
  shortcut?: Partial<Shortcut>;
  projection?: 'A' | 'B';
  inChannels?: number;
  /** Structure of an imported network (full pre-activation ImageNet nets only); omit for the SPEC's. */
  layout?: Partial<Layout>;
}

function depthList(table: Readonly<Record<number, { unit: UnitKind }>>): string {
  return Object.entries(table)
    .map(([d, v]) => `${d} (${v.unit})`)
    .join(', ');
}

export function validDepthsText(): string {
  return `CIFAR (cifar10, cifar100): ${depthList(CIFAR_DEPTHS)}; ImageNet: ${depthList(IMAGENET_DEPTHS)}`;
}

/** Turns a request (CLI flags or API options) into a full config, or throws a ConfigError saying why not. */
export function resolveConfig(req: ModelRequest): ResNetConfig {
  let dataset = req.dataset;
  const depth = req.depth ?? null;
  if (depth !== null && (!Number.isInteger(depth) || depth <= 0)) throw new ConfigError(`--depth must be a positive integer, got ${depth}`);
  if (!dataset) {
    if (depth === null) throw new ConfigError('give --depth, or --dataset with --stages for a custom network');
    const inCifar = depth in CIFAR_DEPTHS;
    const inImagenet = depth in IMAGENET_DEPTHS;
    if (inCifar && inImagenet) throw new ConfigError(`depth ${depth} exists in both families; choose one with --dataset`);
    if (!inCifar && !inImagenet) throw new ConfigError(`no pre-activation ResNet has depth ${depth}. Valid depths: ${validDepthsText()}`);
    dataset = inCifar ? 'cifar10' : 'imagenet';
  }
  const family: Family = dataset === 'imagenet' ? 'imagenet' : 'cifar';
  const classes = req.classes ?? DATASET_CLASSES[dataset];
  if (!Number.isInteger(classes) || classes < 2) throw new ConfigError(`--classes must be an integer >= 2, got ${classes}`);
  const inChannels = req.inChannels ?? DATASET_CHANNELS[dataset];
  if (!Number.isInteger(inChannels) || inChannels < 1) throw new ConfigError(`input channels must be a positive integer, got ${inChannels}`);

  let unit: UnitKind;
  let units: number[];
  if (req.stages && req.stages.length > 0) {
    if (req.stages.some((n) => !Number.isInteger(n) || n < 1)) throw new ConfigError(`--stages must be positive integers, got ${req.stages.join(',')}`);
    if (depth !== null) throw new ConfigError('--depth and --stages conflict: --depth picks the paper\'s stage list; give only one');
    unit = req.unit ?? 'bottleneck';
    if (family === 'cifar') {
      if (req.stages.length !== 1 && req.stages.length !== 3)
        throw new ConfigError(`CIFAR nets have 3 stages: give --stages n (units per stage) or three numbers, got ${req.stages.join(',')}`);
      units = req.stages.length === 1 ? [req.stages[0], req.stages[0], req.stages[0]] : [...req.stages];
    } else {
      if (req.stages.length < 1 || req.stages.length > 4) throw new ConfigError(`ImageNet nets have 1 to 4 stages, got ${req.stages.length}`);
      units = [...req.stages];
    }
  } else {
    if (depth === null) throw new ConfigError('give --depth, or --stages for a custom network');
    if (family === 'cifar') {
      const entry = CIFAR_DEPTHS[depth];
      if (!entry) throw new ConfigError(`depth ${depth} is not a CIFAR pre-activation ResNet. Valid depths: ${validDepthsText()}`);
      unit = entry.unit;
      units = [entry.n, entry.n, entry.n];
      if (req.unit === 'single') {
        // ResNet-110 (1-layer) of Table 3: one BN-ReLU-conv per unit, twice the units, same depth.
        if (entry.unit !== 'basic') throw new ConfigError(`--unit single applies to basic CIFAR depths (6n+2), not ${depth}`);
        unit = 'single';
        units = units.map((n) => 2 * n);
      } else if (req.unit && req.unit !== entry.unit)
        throw new ConfigError(`--unit ${req.unit} conflicts with --depth ${depth}, which is a ${entry.unit} net`);
    } else {
      const entry = IMAGENET_DEPTHS[depth];
      if (!entry) throw new ConfigError(`depth ${depth} is not an ImageNet pre-activation ResNet. Valid depths: ${validDepthsText()}`);
      if (req.unit && req.unit !== entry.unit) throw new ConfigError(`--unit ${req.unit} conflicts with --depth ${depth}, which is a ${entry.unit} net`);
      unit = entry.unit;
      units = [...entry.units];
    }
  }
  if (family === 'imagenet' && unit === 'single') throw new ConfigError('--unit single exists only for CIFAR nets');

  const widths = family === 'cifar' ? CIFAR_WIDTHS : IMAGENET_WIDTHS;
  const stages = units.map((n, i) => ({ units: n, width: widths[i], stride: i === 0 ? 1 : 2 }));
  const projection = req.projection ?? (family === 'cifar' && unit !== 'bottleneck' ? 'A' : 'B');
  if (projection === 'A' && unit === 'bottleneck')
    throw new ConfigError('--projection A (zero-padding shortcut) is defined for basic units only; bottleneck nets use B');
  if (projection === 'A' && family === 'imagenet') throw new ConfigError('--projection A is for CIFAR basic nets; ImageNet nets use B');
  const activation = req.activation ?? 'full-preact';
  if (!ACTIVATIONS.includes(activation)) throw new ConfigError(`unknown unit variant '${activation}' (allowed: ${ACTIVATIONS.join(', ')})`);
  const shortcut = { ...DEFAULT_SHORTCUT, ...req.shortcut };
  if (!SHORTCUTS.includes(shortcut.kind)) throw new ConfigError(`unknown shortcut '${shortcut.kind}' (allowed: ${SHORTCUTS.join(', ')})`);
  if (!(shortcut.scale >= 0 && shortcut.scale <= 1)) throw new ConfigError(`--scale must be in [0, 1] (0: no shortcut on units that keep their shape, Table 1's plain net), got ${shortcut.scale}`);
  if (!(shortcut.dropout >= 0 && shortcut.dropout < 1)) throw new ConfigError(`--dropout must be in [0, 1), got ${shortcut.dropout}`);
  if (!Number.isFinite(shortcut.gateBias)) throw new ConfigError(`--gate-bias must be a number, got ${shortcut.gateBias}`);
  const layout = req.layout ? resolveLayout(req.layout, family, activation, projection, shortcut.kind) : undefined;

  return {
    family,
    dataset,
    depth: req.stages && req.stages.length > 0 ? null : depth,
    classes,
    inChannels,
    unit,
    stages,
    activation,
    shortcut,
    projection,
    strideOn: family === 'cifar' ? '1x1' : '3x3',
    ...(layout ? { layout } : {}),
  };
}

function resolveLayout(given: Partial<Layout>, family: Family, activation: Activation, projection: 'A' | 'B', shortcut: ShortcutKind): Layout {
  const layout: Layout = { ...DEFAULT_LAYOUT, ...given };
  const known = Object.keys(DEFAULT_LAYOUT);
  const unknown = Object.keys(given).filter((k) => !known.includes(k));
  if (unknown.length) throw new ConfigError(`unknown layout field(s) ${unknown.join(', ')} (known: ${known.join(', ')})`);
  if (typeof layout.origin !== 'string' || layout.origin.length === 0) throw new ConfigError('layout.origin must be a non-empty string');
  for (const k of ['stemNorm', 'projectionNorm', 'convBias'] as const)
    if (typeof layout[k] !== 'boolean') throw new ConfigError(`layout.${k} must be true or false, got ${JSON.stringify(layout[k])}`);
  if (!['split', 'branch', 'split-if-projecting'].includes(layout.firstPreact))
    throw new ConfigError(`layout.firstPreact must be 'split', 'branch' or 'split-if-projecting', got ${JSON.stringify(layout.firstPreact)}`);
  if (family !== 'imagenet' || activation !== 'full-preact' || projection !== 'B' || shortcut !== 'identity')
    throw new ConfigError('a layout describes imported full pre-activation ImageNet nets with identity shortcuts and projection B');
  return layout;
}

/** Depth in weighted layers: convs on the main path plus stem and classifier. */
/** The input side a network is summarised and trained at by default: 224 ImageNet, 28 MNIST-style, 32 CIFAR. */
export function defaultInputSize(cfg: ResNetConfig): number {
  return cfg.family === 'imagenet' ? 224 : cfg.inChannels === 1 ? 28 : 32;
}

export function layerCount(cfg: ResNetConfig): number {
  const perUnit = cfg.unit === 'bottleneck' ? 3 : cfg.unit === 'basic' ? 2 : 1;
  return cfg.stages.reduce((s, st) => s + st.units * perUnit, 0) + 2;
}

/** A short human name, e.g. "pre-act ResNet-164 (CIFAR-10)". */
export function describe(cfg: ResNetConfig): string {
  const depth = cfg.depth ?? layerCount(cfg);
  const variant = cfg.activation === 'full-preact' ? 'pre-act ' : `${cfg.activation} `;
  const shortcut = cfg.shortcut.kind === 'identity' ? '' : `, ${cfg.shortcut.kind} shortcut`;
  const single = cfg.unit === 'single' ? ' (1-layer)' : '';
  const ds = DATASET_NAMES[cfg.dataset];
  const layout = cfg.layout ? `, ${cfg.layout.origin} layout` : '';
  return `${variant}ResNet-${depth}${single} (${ds}, ${cfg.classes} classes${shortcut}${layout})`;
}

/**
 * Reads a config recorded as JSON (a checkpoint's `config` metadata, a model's `resnet_onnx.config`). It is
 * re-resolved from its choices and must come out identical, so a hand-edited or foreign config that this
 * version would not build is refused rather than half-trusted.
 */
export function configFromJson(text: string, where = 'config'): ResNetConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${where} is not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${where} is not a JSON object`);
  const c = raw as Partial<Record<keyof ResNetConfig, unknown>>;
  const stages = Array.isArray(c.stages) ? (c.stages as { units?: unknown }[]).map((s) => (typeof s === 'object' && s !== null ? s.units : undefined)) : undefined;
  const req: ModelRequest = {
    dataset: c.dataset as Dataset,
    classes: c.classes as number,
    inChannels: c.inChannels as number,
    unit: c.unit as UnitKind,
    activation: c.activation as Activation,
    shortcut: c.shortcut as Partial<Shortcut>,
    projection: c.projection as 'A' | 'B',
    layout: c.layout as Partial<Layout> | undefined,
  };
  if (c.depth === null || c.depth === undefined) req.stages = stages as number[];
  else req.depth = c.depth as number;
  let cfg: ResNetConfig;
  try {
    cfg = resolveConfig(req);
  } catch (e) {
    throw new ConfigError(`${where} does not describe a network this version builds: ${(e as Error).message}`);
  }
  if (!sameJson(cfg, raw)) throw new ConfigError(`${where} does not describe a network this version builds: it differs from ${JSON.stringify(cfg)}`);
  return cfg;
}

function sameJson(a: unknown, b: unknown): boolean {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
