// The paper's ablation tables as data: each row is a network (a variant of one base net) and the paper's figure
// for it. `reproduce` trains every row with one recipe and sets our figures beside these.

import type { Activation, ModelRequest, Shortcut } from '../models/config.js';

/** The paper's test error (%) of a row, or 'fail' (Table 1: "higher than 20%"). */
export type PaperFigure = number | 'fail';

export interface StudyRow {
  /** Folder name and `--rows` name. */
  id: string;
  /** The row as the paper's table words it. */
  label: string;
  /** How the row differs from the table's base net. */
  shortcut?: Partial<Shortcut>;
  activation?: Activation;
  /** The paper's figure, per depth of the base net (Table 2 has ResNet-110 and ResNet-164 columns). */
  paper: Readonly<Record<number, PaperFigure>>;
  remark?: string;
}

export interface StudyTable {
  name: 'table1' | 'table2';
  title: string;
  /** What the paper trained (depth, variant) and the depths it reports; the first is the default. */
  depths: readonly number[];
  /** Every row's activation placement unless the row says otherwise. */
  activation: Activation;
  rows: readonly StudyRow[];
  /** Where the paper's figures come from, for the results page. */
  source: string;
}

const t1 = (id: string, label: string, shortcut: Partial<Shortcut>, paper: PaperFigure, remark?: string): StudyRow => ({
  id,
  label,
  shortcut,
  paper: { 110: paper },
  ...(remark ? { remark } : {}),
});

/** Table 1 / Fig. 3: shortcut variants on the original ResNet-110 (f = ReLU after the addition, section 3.1). */
export const TABLE1: StudyTable = {
  name: 'table1',
  title: 'Table 1: shortcut connections of ResNet-110 (original units, f = ReLU)',
  depths: [110],
  activation: 'original',
  source: 'He et al. 2016, Table 1 (CIFAR-10 test error, median of 5 runs, 64k iterations); "fail" means above 20%',
  rows: [
    t1('original', 'original (identity shortcut)', { kind: 'identity' }, 6.61),
    t1('scaling-0', 'constant scaling: shortcut x0, F x1', { kind: 'scaling', scale: 0, scaleResidual: false }, 'fail', 'a plain net'),
    t1('scaling-0.5', 'constant scaling: shortcut x0.5, F x1', { kind: 'scaling', scale: 0.5, scaleResidual: false }, 'fail'),
    t1('scaling-0.5-f0.5', 'constant scaling: shortcut x0.5, F x0.5', { kind: 'scaling', scale: 0.5, scaleResidual: true }, 12.35, 'frozen gating'),
    t1('exclusive-gating-0', 'exclusive gating, b_g = 0', { kind: 'exclusive-gating', gateBias: 0 }, 'fail', 'the paper: fail for b_g = 0 to -5'),
    t1('exclusive-gating-6', 'exclusive gating, b_g = -6', { kind: 'exclusive-gating', gateBias: -6 }, 8.7),
    t1('exclusive-gating-7', 'exclusive gating, b_g = -7', { kind: 'exclusive-gating', gateBias: -7 }, 9.81),
    t1('shortcut-gating-0', 'shortcut-only gating, b_g = 0', { kind: 'shortcut-gating', gateBias: 0 }, 12.86),
    t1('shortcut-gating-6', 'shortcut-only gating, b_g = -6', { kind: 'shortcut-gating', gateBias: -6 }, 6.91),
    t1('conv1x1', '1x1 conv shortcut', { kind: 'conv1x1' }, 12.22),
    t1('dropout', 'dropout 0.5 on the shortcut', { kind: 'dropout', dropout: 0.5 }, 'fail'),
  ],
};

const t2 = (activation: Activation, label: string, r110: number, r164: number): StudyRow => ({ id: activation, label, activation, paper: { 110: r110, 164: r164 } });

/** Table 2 / Fig. 4: where BN and ReLU sit, identity shortcuts; ResNet-110 (basic) and ResNet-164 (bottleneck). */
export const TABLE2: StudyTable = {
  name: 'table2',
  title: 'Table 2: activation placements (identity shortcuts)',
  depths: [110, 164],
  activation: 'full-preact',
  source: 'He et al. 2016, Table 2 (CIFAR-10 test error, median of 5 runs, 64k iterations)',
  rows: [
    t2('original', 'original unit (Fig. 4a)', 6.61, 5.93),
    t2('bn-after-add', 'BN after addition (Fig. 4b)', 8.17, 6.5),
    t2('relu-before-add', 'ReLU before addition (Fig. 4c)', 7.84, 6.14),
    t2('relu-only-preact', 'ReLU-only pre-activation (Fig. 4d)', 6.71, 5.91),
    t2('full-preact', 'full pre-activation (Fig. 4e)', 6.37, 5.46),
  ],
};

export const TABLES: Readonly<Record<string, StudyTable>> = { table1: TABLE1, table2: TABLE2 };

/** The network of a row: the table's base net at `depth` (or `stages` for small test nets) with the row's change. */
export function rowRequest(table: StudyTable, row: StudyRow, base: Pick<ModelRequest, 'dataset' | 'depth' | 'stages' | 'unit'>): ModelRequest {
  return {
    ...base,
    activation: row.activation ?? table.activation,
    ...(row.shortcut ? { shortcut: row.shortcut } : {}),
  };
}

/** The paper's figure as a table shows it. */
export function paperText(p: PaperFigure | undefined): string {
  return p === undefined ? '-' : p === 'fail' ? 'fail' : p.toFixed(2);
}
