// The pre-activation ResNet family (He et al. 2016), with the Fig. 4 unit variants and Fig. 2 shortcut
// variants, written once with the graph DSL. Read alongside the paper's Fig. 2, Fig. 4 and appendix.

import { GraphBuilder, type Value } from '../graph/builder.js';
import type { Graph } from '../graph/graph.js';
import { batchNorm, classifier, conv, relu, scalar, subsampleAndPad } from '../graph/layers.js';
import { type Shape, sym } from '../graph/types.js';
import { type Activation, DEFAULT_LAYOUT, type ResNetConfig } from './config.js';

export interface BuildOptions {
  seed?: number;
  /** Input shape; defaults to [N, C, H, W] with symbolic N, H, W (any batch, any size). */
  inputShape?: Shape;
  /** Also output `probabilities` = Softmax(logits). */
  probabilities?: boolean;
}

const PREACT: readonly Activation[] = ['full-preact', 'relu-only-preact'];

/** The layers of one unit's residual branch: conv i with its BN and ReLU, in the order the variant puts them. */
interface ConvSpec {
  out: number;
  kernel: number;
  stride: number;
}

function branchConvs(cfg: ResNetConfig, width: number, stride: number): ConvSpec[] {
  if (cfg.unit === 'single') return [{ out: width, kernel: 3, stride }];
  if (cfg.unit === 'basic') return [{ out: width, kernel: 3, stride }, { out: width, kernel: 3, stride: 1 }];
  const s1 = cfg.strideOn === '1x1' ? stride : 1;
  const s3 = cfg.strideOn === '3x3' ? stride : 1;
  return [{ out: width, kernel: 1, stride: s1 }, { out: width, kernel: 3, stride: s3 }, { out: 4 * width, kernel: 1, stride: 1 }];
}

/**
 * The pre-activation of a pre-act unit's first conv (BN-ReLU for full pre-activation, ReLU alone for (d)).
 * In the first unit of a stage it is applied once before the split, and both paths read its result.
 */
function preactivate(b: GraphBuilder, x: Value, activation: Activation): Value {
  return activation === 'full-preact' ? relu(b, batchNorm(b, x, 'bn1'), 'relu1') : relu(b, x, 'relu1');
}

/**
 * Residual branch F. `preactivated` says the first conv's pre-activation was already applied (first unit).
 *   (e) full-preact:      [BN-ReLU-conv] x k
 *   (d) relu-only-preact: [ReLU-conv-BN] x k
 *   (a) original, (b) BN after addition, (c) ReLU before addition: [conv-BN-ReLU] x k, with the last BN/ReLU
 *   moved after the addition as the variant says (see unit()).
 */
function residual(b: GraphBuilder, x: Value, cfg: ResNetConfig, convs: ConvSpec[], preactivated: boolean): Value {
  let h = x;
  const bias = (cfg.layout ?? DEFAULT_LAYOUT).convBias;
  convs.forEach((c, idx) => {
    const i = idx + 1;
    const last = i === convs.length;
    switch (cfg.activation) {
      case 'full-preact':
        if (i > 1 || !preactivated) h = relu(b, batchNorm(b, h, `bn${i}`), `relu${i}`);
        h = conv(b, h, `conv${i}`, { ...c, bias });
        break;
      case 'relu-only-preact':
        if (i > 1 || !preactivated) h = relu(b, h, `relu${i}`);
        h = batchNorm(b, conv(b, h, `conv${i}`, c), `bn${i}`);
        break;
      case 'original':
        h = conv(b, h, `conv${i}`, c);
        h = batchNorm(b, h, `bn${i}`);
        if (!last) h = relu(b, h, `relu${i}`);
        break;
      case 'bn-after-add':
        h = conv(b, h, `conv${i}`, c);
        if (!last) h = relu(b, batchNorm(b, h, `bn${i}`), `relu${i}`);
        break;
      case 'relu-before-add':
        h = relu(b, batchNorm(b, conv(b, h, `conv${i}`, c), `bn${i}`), `relu${i}`);
        break;
    }
  });
  return h;
}

/** Merges shortcut s and residual f per the Fig. 2 variant (for units whose shape does not change). */
function combine(b: GraphBuilder, s: Value, f: Value, shortcutIn: Value, cfg: ResNetConfig): Value {
  const sc = cfg.shortcut;
  const out = f.shape[1] as number;
  switch (sc.kind) {
    case 'identity':
    case 'conv1x1':
      return b.op1('Add', [s, f], {}, { name: 'add' });
    case 'scaling': {
      // lambda = 0: the shortcut carries nothing, so the unit is F alone (Table 1: "This is a plain net").
      if (sc.scale === 0) return f;
      const scaledS = b.op1('Mul', [s, scalar(b, 'lambda', sc.scale)], {}, { name: 'scale_shortcut' });
      const scaledF = sc.scaleResidual ? b.op1('Mul', [f, scalar(b, 'one_minus_lambda', 1 - sc.scale)], {}, { name: 'scale_residual' }) : f;
      return b.op1('Add', [scaledS, scaledF], {}, { name: 'add' });
    }
    case 'exclusive-gating':
    case 'shortcut-gating': {
      const logits = conv(b, shortcutIn, 'gate', { out, kernel: 1, stride: 1, pad: 0, bias: sc.gateBias });
      const g = b.op1('Sigmoid', [logits], {}, { name: 'gate_sigmoid' });
      const oneMinusG = b.op1('Sub', [scalar(b, 'one', 1), g], {}, { name: 'gate_complement' });
      const gatedS = b.op1('Mul', [s, oneMinusG], {}, { name: 'gate_shortcut' });
      const gatedF = sc.kind === 'exclusive-gating' ? b.op1('Mul', [f, g], {}, { name: 'gate_residual' }) : f;
      return b.op1('Add', [gatedS, gatedF], {}, { name: 'add' });
    }
    case 'dropout': {
      // Dropout (inverted, as in Torch and PyTorch) is the identity at inference, so an inference graph has no
      // Dropout node (onnxruntime's WebGPU provider has no Dropout kernel).
      if (!b.training) return b.op1('Add', [s, f], {}, { name: 'add' });
      const ratio = b.constant('dropout_ratio', { dtype: 'float32', dims: [], values: () => Float32Array.of(sc.dropout) });
      const inputs = [s, ratio, b.constant('dropout_training', { dtype: 'bool', dims: [], values: () => Uint8Array.of(1) })];
      // The mask is a second output, which the gradient rule reuses.
      const [dropped] = b.op('Dropout', inputs, {}, { name: 'dropout', outputs: 2 });
      return b.op1('Add', [dropped, f], {}, { name: 'add' });
    }
  }
}

interface UnitPlan {
  inC: number;
  width: number;
  outC: number;
  stride: number;
  /** First unit of its stage: pre-activation before the split (pre-act variants). */
  first: boolean;
  /** The stem's BN-ReLU already pre-activated the input (ImageNet stage 1, unit 1). */
  stemPreactivated: boolean;
}

function unit(b: GraphBuilder, x: Value, cfg: ResNetConfig, p: UnitPlan): Value {
  const layout = cfg.layout ?? DEFAULT_LAYOUT;
  const preact = PREACT.includes(cfg.activation);
  const convs = branchConvs(cfg, p.width, p.stride);
  let branchIn = x;
  let shortcutIn = x;
  let preactivated = false;
  const reshapes = p.stride !== 1 || p.inC !== p.outC;
  // fb.resnet.torch's ResNet-200 ('branch') pre-activates inside every branch and projects the raw input;
  // timm ('split-if-projecting') shares the pre-activation only with a projection.
  const split = layout.firstPreact === 'split' || (layout.firstPreact === 'split-if-projecting' && reshapes);
  if (preact && p.first && split) {
    if (!p.stemPreactivated) branchIn = shortcutIn = preactivate(b, x, cfg.activation);
    preactivated = true;
  }
  const f = residual(b, branchIn, cfg, convs, preactivated);
  let y: Value;
  if (reshapes) {
    let s: Value;
    if (cfg.projection === 'A') s = subsampleAndPad(b, shortcutIn, 'shortcut', p.stride, p.outC);
    else {
      s = conv(b, shortcutIn, 'shortcut', { out: p.outC, kernel: 1, stride: p.stride, pad: 0, bias: layout.convBias });
      if (layout.projectionNorm) s = batchNorm(b, s, 'shortcut_bn');
    }
    y = b.op1('Add', [s, f], {}, { name: 'add' });
  } else {
    const s = cfg.shortcut.kind === 'conv1x1' ? conv(b, shortcutIn, 'shortcut', { out: p.outC, kernel: 1, stride: 1, pad: 0 }) : shortcutIn;
    y = combine(b, s, f, shortcutIn, cfg);
  }
  const last = convs.length;
  if (cfg.activation === 'original') y = relu(b, y, 'relu_out');
  if (cfg.activation === 'bn-after-add') y = relu(b, batchNorm(b, y, `bn${last}`), 'relu_out');
  return y;
}

/** Builds the inference graph: input `input` [N, C, H, W] float32 -> `logits` [N, classes]. */
export function buildResNet(cfg: ResNetConfig, opts: BuildOptions = {}): Graph {
  const b = new GraphBuilder(graphName(cfg), opts.seed ?? 0);
  const shape = opts.inputShape ?? [sym('N'), cfg.inChannels, sym('H'), sym('W')];
  const logits = resnetForward(b, cfg, b.input('input', 'float32', shape));
  const out = b.output(logits, 'logits');
  if (opts.probabilities) b.output(b.op1('Softmax', [out], { axis: 1 }, { name: 'softmax', outputName: 'probabilities' }));
  return b.build();
}

/**
 * The network from input image to logits, added to `b`. In a training-mode builder, parameters become graph
 * inputs and BN uses batch statistics (src/export/training.ts builds the training step around this).
 */
export function resnetForward(b: GraphBuilder, cfg: ResNetConfig, input: Value): Value {
  let x = input;
  const preact = PREACT.includes(cfg.activation);
  const layout = cfg.layout ?? DEFAULT_LAYOUT;

  let channels: number;
  x = b.scope('stem', () => {
    if (cfg.family === 'imagenet') {
      let h = conv(b, x, 'conv', { out: 64, kernel: 7, stride: 2, pad: 3, bias: layout.convBias });
      // timm's ResNetV2 has no stem BN: its max pool reads the raw conv output.
      if (layout.stemNorm) h = relu(b, batchNorm(b, h, 'bn'), 'relu');
      return b.op1('MaxPool', [h], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'pool' });
    }
    const h = conv(b, x, 'conv', { out: 16, kernel: 3, stride: 1, pad: 1 });
    // Post-activation variants normalise the stem themselves; pre-act units do it in the first unit.
    return preact ? h : relu(b, batchNorm(b, h, 'bn'), 'relu');
  });
  channels = x.shape[1] as number;

  cfg.stages.forEach((stage, si) => {
    const outC = cfg.unit === 'bottleneck' ? 4 * stage.width : stage.width;
    for (let u = 0; u < stage.units; u++) {
      const first = u === 0;
      const plan: UnitPlan = {
        inC: channels,
        width: stage.width,
        outC,
        stride: first ? stage.stride : 1,
        first,
        stemPreactivated: first && si === 0 && cfg.family === 'imagenet' && layout.stemNorm,
      };
      x = b.scope(`stage${si + 1}`, () => b.scope(`unit${u + 1}`, () => unit(b, x, cfg, plan)));
      channels = outC;
    }
  });

  return b.scope('head', () => {
    let h = x;
    if (preact) h = relu(b, batchNorm(b, h, 'bn'), 'relu');
    return classifier(b, h, cfg.classes);
  });
}

/**
 * The network's name in graphs, default file names and the server: `preact_resnet<depth>_<dataset>` for the
 * pre-activation units (Fig. 4d, e), `resnet<depth>_<dataset>` for the post-activation ones (Fig. 4a-c).
 */
export function graphName(cfg: ResNetConfig): string {
  const depth = cfg.depth ?? 'custom';
  return `${PREACT.includes(cfg.activation) ? 'preact_' : ''}resnet${depth}_${cfg.dataset}`;
}
