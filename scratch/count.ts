import { resolveConfig } from '../src/models/config.js';
import { buildResNet } from '../src/models/preact.js';
import { parameterCount } from '../src/graph/graph.js';
const cases: [any, number][] = [
  [{depth:110}, 1727962], [{depth:110, projection:'B'}, 1730522], [{depth:20}, 269722], [{depth:110, unit:'single'}, 1727962],
  [{depth:164}, 1703258], [{depth:1001}, 10327706], [{depth:164, dataset:'cifar100'}, 1726388], [{depth:1001, dataset:'cifar100'}, 10350836],
  [{depth:18},11687720],[{depth:34},21795880],[{depth:50},25549352],[{depth:101},44541480],[{depth:152},60185128],[{depth:200},64666152]];
for (const [req, want] of cases) {
  const t = Date.now();
  const g = buildResNet(resolveConfig(req));
  const n = parameterCount(g);
  console.log(JSON.stringify(req), n, want, n === want ? 'OK' : 'MISMATCH', g.nodes.length, 'nodes', Date.now()-t, 'ms');
}
