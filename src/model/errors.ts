/**
 * A problem in a descriptor, located: the file, the line and column (1-based) of the value
 * at fault, and the field path (e.g. `components.web.count`). Every check collects all of
 * its problems, so a user fixes a file in one round, not one error per run.
 */
export interface Problem {
  file: string;
  line: number;
  column: number;
  field: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  const where = p.line > 0 ? `${p.file}:${p.line}:${p.column}` : p.file;
  return `${where}: ${p.field ? `${p.field}: ` : ""}${p.message}`;
}

export class DescriptorError extends Error {
  constructor(readonly problems: Problem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "DescriptorError";
  }
}
