// The catalogue of published pre-activation ResNet weights that `resnet-onnx pull` fetches: data only, in one
// place (sources and figures: ../shared/FINDINGS.md). No sha256 of these files is known here, so none is listed:
// `pull` records the hash of what it downloaded, and `--sha256` lets a user pin one.

export type PulledFormat = 't7' | 'timm-safetensors';

/** An accuracy as its publisher reports it, with the protocol it was measured under. */
export interface ReportedAccuracy {
  /** Top-1 accuracy in percent (100 - top-1 error). */
  top1: number;
  /** Top-5 accuracy in percent, where reported. */
  top5?: number;
  /** Input resolution: the side of the square centre crop the network saw. */
  resolution: number;
  /** crop_pct: the crop's share of the resized shorter side (224 / 256 = 0.875, 1 = the whole shorter side). */
  crop: number;
  /** Who reported it and where. */
  by: string;
}

export interface CatalogueEntry {
  /** The name `pull` takes; also the default model file, models/<name without 'timm/'>.onnx. */
  name: string;
  /** Other names accepted (case-insensitive, like `name`). */
  aliases: string[];
  /** One line on what the network is. */
  title: string;
  url: string;
  format: PulledFormat;
  licence: string;
  /** Exact size in bytes where known (checked against Content-Length and the download); none is known today. */
  bytes?: number;
  /** Expected size for display only (float32 parameters x 4), in MB; never checked. */
  approxMB?: number;
  /** The depth the file must import as (a wrong file is refused), where known. */
  depth?: number;
  /** How inputs must be prepared, as the publisher trained and evaluated the network. */
  preprocessing: string;
  /** The publisher's ImageNet-1k validation figures, single centre crop. */
  reported: ReportedAccuracy[];
}

const FB_TORCH = 'fb.resnet.torch README (single crop)';
const PAPER = 'He et al. 2016, Table 5 (ResNet-200 with scale and aspect ratio augmentation: the released model)';

export const CATALOGUE: readonly CatalogueEntry[] = [
  {
    name: 'resnet200',
    aliases: ['fb/resnet-200', 'resnet-200'],
    title: "the paper's pre-activation ResNet-200 (fb.resnet.torch release, Lua Torch)",
    url: 'https://d2j0dndfm35trm.cloudfront.net/resnet-200.t7',
    format: 't7',
    licence: 'BSD (fb.resnet.torch repository licence, with its PATENTS grant); ImageNet-1k training data has its own terms',
    approxMB: 259,
    depth: 200,
    preprocessing: 'RGB / 255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); the paper tests at a 320 centre crop of the shorter side resized to 320',
    reported: [
      { top1: 78.34, top5: 94.21, resolution: 224, crop: 0.875, by: FB_TORCH }, // 21.66 / 5.79 % error
      { top1: 79.9, top5: 95.2, resolution: 320, crop: 1, by: PAPER }, // 20.1 / 4.8 % error
    ],
  },
  {
    name: 'timm/resnetv2_50.a1h_in1k',
    aliases: ['resnetv2_50.a1h_in1k', 'resnetv2_50'],
    title: "timm's pre-activation ResNet-50 (ResNetV2, BatchNorm; A1h recipe)",
    url: 'https://huggingface.co/timm/resnetv2_50.a1h_in1k/resolve/main/model.safetensors',
    format: 'timm-safetensors',
    licence: 'Apache-2.0 (the model card on Hugging Face); ImageNet-1k training data has its own terms',
    approxMB: 102,
    depth: 50,
    preprocessing: 'RGB / 255, mean = std = (0.5, 0.5, 0.5), bicubic; 224 centre crop of the shorter side resized to 235 (crop_pct 0.95); tested also at 288, crop_pct 1.0',
    reported: [
      { top1: 80.41, resolution: 224, crop: 0.95, by: 'timm results-imagenet.csv' },
      { top1: 81.41, resolution: 288, crop: 1, by: 'timm results-imagenet.csv' },
    ],
  },
  {
    name: 'timm/resnetv2_101.a1h_in1k',
    aliases: ['resnetv2_101.a1h_in1k', 'resnetv2_101'],
    title: "timm's pre-activation ResNet-101 (ResNetV2, BatchNorm; A1h recipe)",
    url: 'https://huggingface.co/timm/resnetv2_101.a1h_in1k/resolve/main/model.safetensors',
    format: 'timm-safetensors',
    licence: 'Apache-2.0 (the model card on Hugging Face); ImageNet-1k training data has its own terms',
    approxMB: 178,
    depth: 101,
    preprocessing: 'RGB / 255, mean = std = (0.5, 0.5, 0.5), bicubic; 224 centre crop of the shorter side resized to 235 (crop_pct 0.95); tested also at 288, crop_pct 1.0',
    reported: [
      { top1: 82.04, resolution: 224, crop: 0.95, by: 'timm results-imagenet.csv' },
      { top1: 83.0, resolution: 288, crop: 1, by: 'timm results-imagenet.csv' },
    ],
  },
  {
    name: 'timm/resnetv2_18.ra4_e3600_r224_in1k',
    aliases: ['resnetv2_18.ra4_e3600_r224_in1k', 'resnetv2_18'],
    title: "timm's pre-activation ResNet-18 (ResNetV2, BatchNorm; RA4 recipe, 3600 epochs)",
    url: 'https://huggingface.co/timm/resnetv2_18.ra4_e3600_r224_in1k/resolve/main/model.safetensors',
    format: 'timm-safetensors',
    licence: 'Apache-2.0 (the model card on Hugging Face); ImageNet-1k training data has its own terms',
    approxMB: 47,
    depth: 18,
    preprocessing: 'RGB / 255, mean = std = (0.5, 0.5, 0.5), bicubic; 224 centre crop of the shorter side resized to 248 (crop_pct 0.9); tested also at 288, crop_pct 1.0',
    reported: [
      { top1: 73.57, resolution: 224, crop: 0.9, by: 'timm results-imagenet.csv' },
      { top1: 75.36, resolution: 288, crop: 1, by: 'timm results-imagenet.csv' },
    ],
  },
  {
    name: 'timm/resnetv2_34.ra4_e3600_r224_in1k',
    aliases: ['resnetv2_34.ra4_e3600_r224_in1k', 'resnetv2_34'],
    title: "timm's pre-activation ResNet-34 (ResNetV2, BatchNorm; RA4 recipe, 3600 epochs)",
    url: 'https://huggingface.co/timm/resnetv2_34.ra4_e3600_r224_in1k/resolve/main/model.safetensors',
    format: 'timm-safetensors',
    licence: 'Apache-2.0 (the model card on Hugging Face); ImageNet-1k training data has its own terms',
    approxMB: 87,
    depth: 34,
    preprocessing: 'RGB / 255, mean = std = (0.5, 0.5, 0.5), bicubic; 224 centre crop of the shorter side resized to 248 (crop_pct 0.9); tested also at 288, crop_pct 1.0',
    reported: [
      { top1: 77.63, resolution: 224, crop: 0.9, by: 'timm results-imagenet.csv' },
      { top1: 79.07, resolution: 288, crop: 1, by: 'timm results-imagenet.csv' },
    ],
  },
];

/** Names that look like catalogue entries but are refused, with the reason and what to pull instead. */
export interface RefusedName {
  names: string[];
  reason: string;
  instead?: string;
}

const notPreact = (depth: number): string =>
  `fb.resnet.torch's ResNet-${depth} is the original (post-activation) ResNet of He et al. 2015, not a pre-activation network; of that release only ResNet-200 is pre-activation`;

export const REFUSED: readonly RefusedName[] = [
  { names: ['fb/resnet-18', 'resnet-18', 'resnet18'], reason: notPreact(18), instead: 'timm/resnetv2_18.ra4_e3600_r224_in1k' },
  { names: ['fb/resnet-34', 'resnet-34', 'resnet34'], reason: notPreact(34), instead: 'timm/resnetv2_34.ra4_e3600_r224_in1k' },
  { names: ['fb/resnet-50', 'resnet-50', 'resnet50'], reason: notPreact(50), instead: 'timm/resnetv2_50.a1h_in1k' },
  { names: ['fb/resnet-101', 'resnet-101', 'resnet101'], reason: notPreact(101), instead: 'timm/resnetv2_101.a1h_in1k' },
  { names: ['fb/resnet-152', 'resnet-152', 'resnet152'], reason: notPreact(152), instead: 'resnet200' },
];
