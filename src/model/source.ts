import { isMap, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import type { Problem } from "./errors.js";

/**
 * A YAML document that remembers where each value came from, so that a problem found in
 * the parsed data can name its line. Syntax errors are problems too, with their position.
 */
export class Source {
  private readonly lines = new LineCounter();
  readonly data: unknown;
  readonly problems: Problem[] = [];
  private readonly doc;

  constructor(
    readonly file: string,
    text: string,
  ) {
    this.doc = parseDocument(text, {
      lineCounter: this.lines,
      prettyErrors: false,
      uniqueKeys: true,
    });
    for (const e of this.doc.errors) {
      const pos = this.lines.linePos(e.pos[0]);
      this.problems.push({
        file,
        line: pos.line,
        column: pos.col,
        field: "",
        message: e.message.split("\n")[0] ?? "YAML syntax error",
      });
    }
    this.data = this.problems.length ? null : this.doc.toJS();
  }

  /** A problem at a field path (keys and indexes); located at the deepest node that exists. */
  problem(path: readonly (string | number)[], message: string): Problem {
    let node: unknown = this.doc.contents;
    let located = node as Node | null;
    for (const key of path) {
      if (isMap(node)) node = node.get(key, true);
      else if (isSeq(node) && typeof key === "number") node = node.get(key, true);
      else break;
      if (node && typeof node === "object" && "range" in (node as object)) located = node as Node;
    }
    const offset = located?.range?.[0];
    const pos = offset === undefined ? { line: 0, col: 0 } : this.lines.linePos(offset);
    return {
      file: this.file,
      line: pos.line,
      column: pos.col,
      field: path.map(String).join("."),
      message,
    };
  }
}
