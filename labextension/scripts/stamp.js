#!/usr/bin/env node
/*
 * Finishes a build: copies install.json beside the built package.json, and writes
 * ../ftkit/labextension/build-stamp.json: a hash of the sources the built
 * assets came from, so a Python test (tests/test_labextension.py) checks without Node that the
 * committed assets are those of the committed sources.
 *
 * The hash (recomputed the same way in that test): the files of SOURCES (folders walked in full,
 * names starting with "." skipped), sorted by their path relative to labextension/ with "/"
 * separators; for each, the line "<path>\t<sha256 of its bytes>\n"; the sha256 of all the lines.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const SOURCES = ['package.json', 'tsconfig.json', 'src', 'style', 'schema'];

function files(rel) {
  const full = path.join(ROOT, rel);
  if (!fs.statSync(full).isDirectory()) {
    return [rel];
  }
  return fs
    .readdirSync(full)
    .filter(name => !name.startsWith('.'))
    .flatMap(name => files(`${rel}/${name}`));
}

function sourcesHash() {
  const list = SOURCES.flatMap(files).sort();
  const lines = list.map(rel => {
    const digest = crypto.createHash('sha256').update(fs.readFileSync(path.join(ROOT, rel))).digest('hex');
    return `${rel}\t${digest}\n`;
  });
  return { list, hash: crypto.createHash('sha256').update(lines.join('')).digest('hex') };
}

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const out = path.resolve(ROOT, pkg.jupyterlab.outputDir, 'build-stamp.json');
const { list, hash } = sourcesHash();
const builder = JSON.parse(
  fs.readFileSync(path.join(ROOT, 'node_modules', '@jupyter', 'builder', 'package.json'), 'utf8')
).version;
const stamp = {
  name: pkg.name,
  version: pkg.version,
  sources_sha256: hash,
  sources: list,
  built_with: { node: process.version, '@jupyter/builder': builder }
};
fs.writeFileSync(out, JSON.stringify(stamp, null, 2) + '\n');
// install.json tells `jupyter labextension list` which Python package installed the extension.
fs.copyFileSync(path.join(ROOT, 'install.json'), path.resolve(ROOT, pkg.jupyterlab.outputDir, 'install.json'));
console.log(`wrote ${path.relative(process.cwd(), out)}: sources ${hash.slice(0, 12)} (${list.length} files)`);
