/**
 * Enforces STYLE.md §2 (dependency direction) on the workspace:
 * - every dependency / peerDependency / optionalDependency edge between our packages is in the table;
 * - files under `src/` import only the packages their table row allows;
 * - no deep import (`@natten-web/x/src/...`, `.../dist/...`, or a relative path into another package);
 * - core, cpu and wgsl never mention `GPUDevice`, `navigator` or `document`, and never import `webgpu`
 *   or `@webgpu/types`.
 * devDependencies are not edges: tests may use testkit or a sibling backend as an oracle.
 *
 * Run: `pnpm check-deps` (root) or `pnpm --filter @natten-web/tools check-deps`. Exit code 1 on any violation.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import ts from 'typescript';
import { defaultRoot, isMain, listWorkspace, relPath, type WorkspaceMember } from './workspace.ts';

const CORE = '@natten-web/core';
const CPU = '@natten-web/cpu';
const WGSL = '@natten-web/wgsl';
const GPU = '@natten-web/gpu';
const AUTOTUNE = '@natten-web/autotune';
const UMBRELLA = 'natten-web';

/** A row of STYLE.md §2: the internal packages a package may depend on at runtime, or `'any'`. */
export type AllowedEdges = readonly string[] | 'any';

/** STYLE.md §2, keyed by package name. */
export const ALLOWED_BY_NAME: Readonly<Record<string, AllowedEdges>> = {
  [CORE]: [],
  [CPU]: [CORE],
  [WGSL]: [CORE],
  [GPU]: [CORE, WGSL],
  [AUTOTUNE]: [CORE, GPU, WGSL],
  [UMBRELLA]: [CORE, CPU, WGSL, GPU, AUTOTUNE],
  '@natten-web/testkit': 'any',
  '@natten-web/tools': 'any',
  '@natten-web/bench': 'any',
};

/** Rows keyed by workspace folder, for members whose name is not fixed by the guide. */
export function allowedByDir(dir: string): AllowedEdges | undefined {
  if (dir === 'tools' || dir.startsWith('tools/') || dir === 'bench') return 'any';
  if (dir.startsWith('examples/')) return [UMBRELLA];
  return undefined;
}

/** Packages whose sources must stay free of DOM and WebGPU. */
export const PLAIN_PACKAGES: readonly string[] = [CORE, CPU, WGSL];
const FORBIDDEN_IDENTIFIERS: ReadonlySet<string> = new Set(['GPUDevice', 'navigator', 'document']);
const FORBIDDEN_MODULES: ReadonlySet<string> = new Set(['webgpu', '@webgpu/types']);

const RUNTIME_EDGE_FIELDS = ['dependencies', 'peerDependencies', 'optionalDependencies'] as const;
const SOURCE_EXTENSIONS = /\.(ts|tsx|mts|cts|js|jsx|mjs|cjs)$/;
const SKIPPED_DIRS: ReadonlySet<string> = new Set(['node_modules', 'dist', 'coverage', 'out', 'results']);
const MAX_SOURCE_BYTES = 2_000_000;

export function isInternal(name: string): boolean {
  return name === UMBRELLA || name.startsWith('@natten-web/');
}

/** The package part of a bare specifier: `@scope/name/sub` -> `@scope/name`, `name/sub` -> `name`. */
export function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] ?? specifier);
}

/** True for `@natten-web/x/src/...`, `natten-web/dist/...` and the like. */
export function isDeepImport(specifier: string): boolean {
  if (!isInternal(packageOf(specifier))) return false;
  const rest = specifier.slice(packageOf(specifier).length);
  return /^\/(src|dist)(\/|$)/.test(rest);
}

export interface Violation {
  readonly package: string;
  /** `file:line` relative to the root, or the package.json path for manifest edges. */
  readonly where: string;
  readonly message: string;
}

export interface CheckReport {
  readonly packages: number;
  readonly internalEdges: number;
  readonly sourceFiles: number;
  readonly violations: readonly Violation[];
}

function describeAllowed(allowed: AllowedEdges): string {
  if (allowed === 'any') return 'anything';
  return allowed.length === 0 ? 'no @natten-web package' : allowed.join(', ');
}

function allowedFor(member: WorkspaceMember): AllowedEdges | undefined {
  return allowedByDir(member.dir) ?? ALLOWED_BY_NAME[member.name];
}

function listSourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const abs = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!SKIPPED_DIRS.has(entry.name)) out.push(...listSourceFiles(abs));
    } else if (entry.isFile() && SOURCE_EXTENSIONS.test(entry.name) && statSync(abs).size <= MAX_SOURCE_BYTES) {
      out.push(abs);
    }
  }
  return out.sort();
}

interface ModuleReference {
  readonly specifier: string;
  readonly line: number;
}

interface FileFacts {
  readonly modules: readonly ModuleReference[];
  /** Forbidden DOM/WebGPU names used as identifiers or as exact string keys (`globalThis['navigator']`). */
  readonly forbiddenNames: readonly ModuleReference[];
}

function scriptKindFor(file: string): ts.ScriptKind {
  if (file.endsWith('.tsx')) return ts.ScriptKind.TSX;
  if (file.endsWith('.jsx')) return ts.ScriptKind.JSX;
  if (/\.(js|mjs|cjs)$/.test(file)) return ts.ScriptKind.JS;
  return ts.ScriptKind.TS;
}

/** Parses one file and collects module references and forbidden names (comments and strings are not code). */
export function scanSource(file: string, text: string): FileFacts {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, scriptKindFor(file));
  const lineOf = (node: ts.Node): number => sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
  const modules: ModuleReference[] = [];
  const forbiddenNames: ModuleReference[] = [];
  for (const ref of sf.typeReferenceDirectives) {
    modules.push({ specifier: ref.fileName, line: sf.getLineAndCharacterOfPosition(ref.pos).line + 1 });
  }
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier !== undefined) {
      if (ts.isStringLiteral(node.moduleSpecifier)) {
        modules.push({ specifier: node.moduleSpecifier.text, line: lineOf(node) });
      }
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const expr = node.moduleReference.expression;
      if (ts.isStringLiteral(expr)) modules.push({ specifier: expr.text, line: lineOf(node) });
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const isImportCall = callee.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(callee) && callee.text === 'require';
      const first = node.arguments[0];
      if ((isImportCall || isRequire) && first !== undefined && ts.isStringLiteralLike(first)) {
        modules.push({ specifier: first.text, line: lineOf(node) });
      }
    } else if (ts.isImportTypeNode(node)) {
      const arg = node.argument;
      if (ts.isLiteralTypeNode(arg) && ts.isStringLiteral(arg.literal)) {
        modules.push({ specifier: arg.literal.text, line: lineOf(node) });
      }
    } else if (ts.isIdentifier(node) && FORBIDDEN_IDENTIFIERS.has(node.text)) {
      forbiddenNames.push({ specifier: node.text, line: lineOf(node) });
    } else if (ts.isElementAccessExpression(node) && ts.isStringLiteralLike(node.argumentExpression)) {
      const key = node.argumentExpression.text;
      if (FORBIDDEN_IDENTIFIERS.has(key)) forbiddenNames.push({ specifier: key, line: lineOf(node) });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return { modules, forbiddenNames };
}

function isInside(dir: string, file: string): boolean {
  return file === dir || file.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/** Checks the workspace rooted at `root` (the folder holding pnpm-workspace.yaml). */
export function checkWorkspace(root: string): CheckReport {
  const members = listWorkspace(root);
  const violations: Violation[] = [];
  let internalEdges = 0;
  let sourceFiles = 0;

  for (const member of members) {
    const manifestWhere = `${member.dir}/package.json`;
    const allowed = allowedFor(member);
    if (allowed === undefined) {
      if (isInternal(member.name)) {
        violations.push({
          package: member.name,
          where: manifestWhere,
          message: `${member.name} is not in the STYLE.md §2 table; add its row to tools/src/check-deps.ts first`,
        });
      } else {
        violations.push({
          package: member.name,
          where: manifestWhere,
          message: `workspace member "${member.name}" is neither a @natten-web package nor under tools/, bench/ or examples/`,
        });
      }
    }

    for (const field of RUNTIME_EDGE_FIELDS) {
      for (const dep of Object.keys(member.manifest[field] ?? {})) {
        if (!isInternal(dep) || dep === member.name) continue;
        internalEdges += 1;
        if (allowed !== undefined && allowed !== 'any' && !allowed.includes(dep)) {
          violations.push({
            package: member.name,
            where: manifestWhere,
            message: `${field} edge ${member.name} -> ${dep} is not allowed (STYLE.md §2: ${member.name} may depend on ${describeAllowed(allowed)})`,
          });
        }
      }
    }

    const plain = PLAIN_PACKAGES.includes(member.name);
    for (const file of listSourceFiles(member.absDir)) {
      sourceFiles += 1;
      const where = relPath(root, file);
      const inSrc = isInside(join(member.absDir, 'src'), file);
      const facts = scanSource(file, readFileSync(file, 'utf8'));
      for (const { specifier, line } of facts.modules) {
        const at = `${where}:${line}`;
        if (specifier.startsWith('.')) {
          const target = resolve(dirname(file), specifier);
          const other = members.find((m) => m !== member && isInside(m.absDir, target));
          if (other !== undefined) {
            violations.push({
              package: member.name,
              where: at,
              message: `relative import "${specifier}" reaches into ${other.name}; import "${other.name}" (its public entry point) instead`,
            });
          }
          continue;
        }
        if (isDeepImport(specifier)) {
          violations.push({
            package: member.name,
            where: at,
            message: `deep import "${specifier}"; import "${packageOf(specifier)}" (its public entry point) instead`,
          });
        }
        const target = packageOf(specifier);
        if (plain && FORBIDDEN_MODULES.has(target)) {
          violations.push({
            package: member.name,
            where: at,
            message: `${member.name} imports "${specifier}"; core, cpu and wgsl must not use WebGPU (STYLE.md §2)`,
          });
        }
        if (
          inSrc &&
          allowed !== undefined &&
          allowed !== 'any' &&
          isInternal(target) &&
          target !== member.name &&
          !allowed.includes(target)
        ) {
          violations.push({
            package: member.name,
            where: at,
            message: `src imports "${specifier}", but ${member.name} may depend on ${describeAllowed(allowed)} (STYLE.md §2)`,
          });
        }
      }
      if (plain) {
        for (const { specifier, line } of facts.forbiddenNames) {
          violations.push({
            package: member.name,
            where: `${where}:${line}`,
            message: `"${specifier}" in ${member.name}; core, cpu and wgsl must stay free of DOM and WebGPU (STYLE.md §2)`,
          });
        }
      }
    }
  }
  return { packages: members.length, internalEdges, sourceFiles, violations };
}

export function formatReport(report: CheckReport): string {
  const lines = report.violations.map((v) => `check-deps: ${v.where}: ${v.message}`);
  const summary = `check-deps: ${report.packages} packages, ${report.internalEdges} internal edges, ${report.sourceFiles} source files`;
  lines.push(report.violations.length === 0 ? `${summary}: OK` : `${summary}: ${report.violations.length} violation(s)`);
  return lines.join('\n');
}

if (isMain(import.meta.url)) {
  const root = process.argv[2] !== undefined ? resolve(process.argv[2]) : defaultRoot();
  const report = checkWorkspace(root);
  console.log(formatReport(report));
  process.exitCode = report.violations.length === 0 ? 0 : 1;
}
