import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import {
  type ApplianceClass,
  classRef,
  DescriptorError,
  type Problem,
  parseApplication,
  parseClass,
  parseMiB,
} from "../../src/model/index.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLASSES = join(ROOT, "catalog", "classes");
const catalog = new Map<string, ApplianceClass>(
  readdirSync(CLASSES).map((f) => {
    const c = parseClass(f, readFileSync(join(CLASSES, f), "utf8"));
    return [classRef(c), c];
  }),
);

function problems(text: string): Problem[] {
  try {
    parseApplication("app.yaml", text, catalog);
  } catch (err) {
    assert.ok(err instanceof DescriptorError, String(err));
    return err.problems;
  }
  assert.fail("expected problems");
}

const SHOP = readFileSync(join(ROOT, "examples", "shop.yaml"), "utf8");

describe("application descriptors", () => {
  it("the shop example: instances expanded, links per instance, the exposure, the demand", () => {
    const app = parseApplication("shop.yaml", SHOP, catalog);
    assert.deepEqual(
      app.instances.map((i) => i.id),
      ["lb.0", "web.0", "web.1", "web.2", "db.0"],
    );
    assert.equal(app.links.length, 6);
    assert.deepEqual(app.links[0], {
      from: { instance: "lb.0", terminal: "backend" },
      to: { instance: "web.0", terminal: "http" },
      protocol: "tcp",
      port: 80,
    });
    assert.deepEqual(app.exposures, [
      { component: "lb", terminal: "http", port: 80, terminalPort: 80, protocol: "tcp" },
    ]);
    assert.deepEqual(app.demand, { cpus: 3, memoryMiB: 2048 });
    assert.equal(app.instances[1]?.properties.title, "flatgrid shop");
    assert.equal(app.instances[0]?.properties.balance, "roundrobin", "defaults fill in");
  });

  it("data volumes: the class's by default, a component's own size, 0 for none, not too small", () => {
    const app = parseApplication("shop.yaml", SHOP, catalog);
    assert.deepEqual(
      app.instances.map((i) => [i.id, i.volumeMiB]),
      [
        ["lb.0", 0],
        ["web.0", 0],
        ["web.1", 0],
        ["web.2", 0],
        ["db.0", 256],
      ],
    );
    const own = parseApplication(
      "shop.yaml",
      SHOP.replace("    memory: 1GiB\n", "    memory: 1GiB\n    volume: 2GiB\n"),
      catalog,
    );
    assert.equal(own.instances.at(-1)?.volumeMiB, 2048);
    const none = parseApplication(
      "shop.yaml",
      SHOP.replace("    memory: 1GiB\n", "    memory: 1GiB\n    volume: 0\n"),
      catalog,
    );
    assert.equal(none.instances.at(-1)?.volumeMiB, 0);
    const p = problems(SHOP.replace("    memory: 1GiB\n", "    memory: 1GiB\n    volume: 4MiB\n"));
    assert.equal(p.length, 1);
    assert.equal(p[0]?.field, "components.db.volume");
    assert.match(p[0]?.message ?? "", /a data volume needs at least 16 MiB \(0: none\)/);
    assert.ok((p[0]?.line ?? 0) > 0, "located");
  });

  it("names file, line and field", () => {
    const p = problems(SHOP.replace("class: web@1", "class: web@7"));
    assert.equal(p.length, 1);
    assert.equal(p[0]?.field, "components.web.class");
    assert.equal(p[0]?.line, 12);
    assert.match(p[0]?.message ?? "", /no class web@7 in the catalog \(it has web@1\)/);
  });

  it("reports every problem at once", () => {
    const p = problems(
      SHOP.replace("title: flatgrid shop", "title: 5, colour: red").replace(
        "{ from: web.db, to: db.redis }",
        "{ from: db.redis, to: web.http }",
      ),
    );
    const fields = p.map((x) => `${x.field}: ${x.message}`);
    assert.ok(
      fields.some((f) => /properties.title: must be a string/.test(f)),
      fields.join("\n"),
    );
    assert.ok(fields.some((f) => /properties.colour: web@1 has no property "colour"/.test(f)));
    assert.ok(fields.some((f) => /connections.1.from: "db.redis" is an input/.test(f)));
  });

  it("an output connects to exactly one input", () => {
    const p = problems(`${SHOP}  - { from: lb.backend, to: db.redis }\n`);
    assert.match(p[0]?.message ?? "", /output lb.0.backend is already connected/);
  });

  it("an unconnected mandatory output is an error", () => {
    const p = problems(SHOP.replace("  - { from: lb.backend, to: web.http }\n", ""));
    assert.match(p[0]?.message ?? "", /output terminal "backend" of lb@1 must be connected/);
  });

  it("the budget must cover the components, and says by how much it does not", () => {
    const p = problems(
      SHOP.replace(
        "budget: { cpus: 4, memory: 4GiB, nodes: 3 }",
        "budget: { cpus: 2, memory: 1GiB }",
      ),
    );
    assert.deepEqual(
      p.map((x) => [x.field, x.message]),
      [
        ["budget.cpus", "the components need 3 CPUs, the budget has 2: 1 short"],
        ["budget.memory", "the components need 2 GiB, the budget has 1 GiB: 1 GiB short"],
      ],
    );
  });

  it("schema problems: unknown fields, bad sizes, YAML syntax", () => {
    assert.match(
      problems(SHOP.replace("cpus: 0.5\n    expose", "cpuz: 0.5\n    expose"))[0]?.message ?? "",
      /unknown field "cpuz"/,
    );
    assert.equal(
      problems(SHOP.replace("memory: 1GiB", "memory: lots"))[0]?.field,
      "components.db.memory",
    );
    const syntax = problems("name: x\nbudget: { cpus: 1\n");
    assert.ok((syntax[0]?.line ?? 0) > 0);
  });

  it("sizes", () => {
    assert.equal(parseMiB("4GiB"), 4096);
    assert.equal(parseMiB("1.5 GiB"), 1536);
    assert.equal(parseMiB(512), 512);
    assert.equal(parseMiB("512k"), null);
    assert.equal(parseMiB("-1"), null);
  });

  it("class descriptors are checked too", () => {
    assert.throws(
      () =>
        parseClass(
          "x.yaml",
          "name: x\nversion: 1\nresources: { cpus: 1, memory: 1GiB }\nproperties: { a: { type: integer, default: nope } }\n",
        ),
      /x.yaml:4:.*properties.a.default: is not of type integer/,
    );
  });
});
