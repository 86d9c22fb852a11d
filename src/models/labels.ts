// Class names and input preprocessing of each dataset the family is defined for.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelsDir } from '../util/paths.js';
import type { Dataset } from './config.js';

const CIFAR10 = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

// CIFAR-100 fine labels in the dataset's label order (alphabetical).
const CIFAR100 = (
  'apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle ' +
  'caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish ' +
  'forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle ' +
  'mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine ' +
  'possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar ' +
  'sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree ' +
  'wolf woman worm'
).split(' ');

const FASHION_MNIST = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
const MNIST = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

let imagenet: string[] | undefined;

/** The 1000 ILSVRC-2012 class names in the standard order (sorted WordNet ids; 0 = tench). */
export function imagenetLabels(): string[] {
  if (!imagenet) {
    const path = join(modelsDir(), 'imagenet-classes.txt');
    imagenet = readFileSync(path, 'utf8').split('\n').filter((l) => l.length > 0);
    if (imagenet.length !== 1000) throw new Error(`${path} has ${imagenet.length} class names, 1000 expected`);
  }
  return imagenet;
}

/** Labels for `classes` outputs of a dataset; generic names when the count differs from the dataset's. */
export function datasetLabels(dataset: Dataset, classes: number): string[] {
  const known = { cifar10: CIFAR10, cifar100: CIFAR100, 'fashion-mnist': FASHION_MNIST, mnist: MNIST, imagenet: [] }[dataset];
  if (dataset === 'imagenet') return classes === 1000 ? [...imagenetLabels()] : Array.from({ length: classes }, (_, i) => `class_${i}`);
  if (known.length === classes) return [...known];
  return Array.from({ length: classes }, (_, i) => `class_${i}`);
}

/** How to turn an image into the network's input tensor. Recorded in every exported model's metadata. */
export interface Preprocessing {
  /** Resize so the shorter side is this many pixels (then centre crop). */
  resize: number;
  /** Centre crop size (square). */
  crop: number;
  /** Pixel values are first scaled to [0, 1] by this factor (1/255), then normalised per channel. */
  scale: number;
  mean: number[];
  std: number[];
  channelOrder: 'RGB' | 'BGR' | 'L';
  layout: 'NCHW';
  interpolation: 'bilinear' | 'bicubic';
  /**
   * The paper's per-pixel mean (CIFAR), subtracted from the crop's pixel values before `scale`, `mean` and `std`:
   * input[c, y, x] = ((v[c, y, x] - meanImage[c, y, x]) * scale - mean[c]) / std[c]. Absent: nothing subtracted.
   */
  meanImage?: MeanImage;
}

/** A mean image as the metadata's JSON holds it (see encodeMeanImage / decodeMeanImage in src/export/metadata.ts). */
export interface MeanImage {
  /** [C, H, W]: channels in the input's order (after any BGR swap), H = W = the crop size. */
  shape: [number, number, number];
  /** C * H * W float32 values in pixel values 0..255, planar, little-endian, base64. */
  values: string;
}

export function datasetPreprocessing(dataset: Dataset): Preprocessing {
  switch (dataset) {
    case 'imagenet':
      // Paper Table 5: shorter side 320, centre 320x320 crop; fb.resnet.torch normalisation.
      return { resize: 320, crop: 320, scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], channelOrder: 'RGB', layout: 'NCHW', interpolation: 'bilinear' };
    case 'cifar10':
      return { resize: 32, crop: 32, scale: 1 / 255, mean: [125.3 / 255, 123.0 / 255, 113.9 / 255], std: [63.0 / 255, 62.1 / 255, 66.7 / 255], channelOrder: 'RGB', layout: 'NCHW', interpolation: 'bilinear' };
    case 'cifar100':
      return { resize: 32, crop: 32, scale: 1 / 255, mean: [129.3 / 255, 124.1 / 255, 112.4 / 255], std: [68.2 / 255, 65.4 / 255, 70.4 / 255], channelOrder: 'RGB', layout: 'NCHW', interpolation: 'bilinear' };
    case 'fashion-mnist':
      // Statistics of the Fashion-MNIST training set.
      return { resize: 28, crop: 28, scale: 1 / 255, mean: [0.286], std: [0.353], channelOrder: 'L', layout: 'NCHW', interpolation: 'bilinear' };
    case 'mnist':
      return { resize: 28, crop: 28, scale: 1 / 255, mean: [0.1307], std: [0.3081], channelOrder: 'L', layout: 'NCHW', interpolation: 'bilinear' };
  }
}
