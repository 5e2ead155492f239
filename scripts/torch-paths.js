#!/usr/bin/env node
// Where libtorch lives, for binding.gyp. Default: Debian's libtorch-dev (/usr).
// Set LIBTORCH=/path/to/libtorch (an unpacked pytorch.org archive, CPU or CUDA) to
// build against another one; its lib/ folder is added to the run-time search path.
'use strict';
const fs = require('fs');
const path = require('path');

const root = process.env.LIBTORCH ? path.resolve(process.env.LIBTORCH) : null;
const what = process.argv[2];

function includeDirs() {
  if (!root) return ['/usr/include/torch/csrc/api/include'];
  return [path.join(root, 'include'), path.join(root, 'include/torch/csrc/api/include')];
}

function libs() {
  const dir = root ? path.join(root, 'lib') : null;
  const has = (name) => dir && fs.existsSync(path.join(dir, `lib${name}.so`));
  const out = [];
  if (dir) out.push(`-L${dir}`, `-Wl,-rpath,${dir}`);
  // CUDA builds register their kernels from static initializers: keep them linked.
  const cuda = ['torch_cuda', 'c10_cuda'].filter(has);
  if (cuda.length) out.push('-Wl,--no-as-needed', ...cuda.map((n) => `-l${n}`), '-Wl,--as-needed');
  out.push('-ltorch', '-ltorch_cpu', '-lc10');
  return out;
}

function defines() {
  // pytorch.org also ships pre-C++11-ABI archives; TORCH_CXX11_ABI=0 selects that ABI.
  const abi = process.env.TORCH_CXX11_ABI ?? '1';
  return [`_GLIBCXX_USE_CXX11_ABI=${abi}`];
}

const table = { include: includeDirs, libs, defines };
if (!table[what]) {
  console.error(`torch-paths: unknown query "${what}" (use include, libs or defines)`);
  process.exit(2);
}
console.log(table[what]().join(' '));
