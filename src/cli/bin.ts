#!/usr/bin/env node
// The `resnet-onnx` executable.

import { main } from './main.js';

process.exitCode = await main(process.argv);
