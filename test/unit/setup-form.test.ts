import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { plain } from "../../src/console/index.js";
import { SetupForm } from "../../src/console/setup-form.js";

/** Types text into the focused field, key by key, as the terminal sends it. */
function type(form: SetupForm, text: string) {
  for (const ch of text) form.key(ch, ch === " " ? "space" : undefined);
}
const screen = (form: SetupForm) => form.lines(80).map(plain).join("\n");

describe("console setup form", () => {
  it("first boot: grid, token, a static address marked when bad and taken when good, a password", () => {
    const form = new SetupForm({}, false);
    // Saving an empty form marks what is missing and goes to the first of it.
    assert.equal(form.key(undefined, "down", true), null);
    form.focus = form.visible().length;
    assert.equal(form.key(undefined, "enter"), null);
    assert.match(screen(form), /\^ Grid name is needed/);
    assert.equal(form.focus, 0);
    type(form, "rack-a");
    form.key(undefined, "enter");
    type(form, "a-long-shared-secret");
    form.key(undefined, "tab");
    assert.match(screen(form), /Join token +\[\*{20} +\]/);
    assert.doesNotMatch(screen(form), /a-long-shared-secret/);
    form.key(" ", "space");
    assert.equal(form.values["flatgrid.net"], "static");
    form.key(undefined, "down");
    type(form, "10.0.0.300/24");
    form.key(undefined, "down");
    assert.match(
      screen(form),
      /\^ Address is not an IPv4 address with a prefix length, like 192\.0\.2\.10\/24/,
    );
    form.key(undefined, "up");
    for (let i = 0; i < 6; i++) form.key(undefined, "backspace");
    type(form, "5/24");
    form.key(undefined, "down");
    assert.doesNotMatch(screen(form), /\^ Address/);
    type(form, "10.0.0.1");
    form.key(undefined, "down");
    form.key(undefined, "down");
    type(form, "correct horse");
    form.key(undefined, "down");
    type(form, "correct horse");
    form.key(undefined, "down");
    assert.ok(form.onButton);
    assert.equal(form.key(undefined, "enter"), "submit");
    assert.deepEqual(form.request(), {
      settings: {
        "flatgrid.grid": "rack-a",
        "flatgrid.token": "a-long-shared-secret",
        "flatgrid.net": "static",
        "flatgrid.ip": "10.0.0.5/24",
        "flatgrid.gateway": "10.0.0.1",
      },
      consolePassword: "correct horse",
    });
  });

  it("a configured node: the current password is asked, the token kept unless retyped, the answer's problems marked", () => {
    const form = new SetupForm(
      { "flatgrid.grid": "lab", "flatgrid.net": "static", "flatgrid.ip": "10.0.0.5/24" },
      true,
    );
    assert.equal(form.visible()[0]?.key, "currentPassword");
    type(form, "wrong one");
    // Back to DHCP: the stored address goes.
    form.focus = form.visible().findIndex((f) => f.key === "flatgrid.net");
    form.key(undefined, "left");
    form.focus = form.visible().length;
    assert.equal(form.key(undefined, "enter"), "submit");
    assert.deepEqual(form.request(), {
      settings: { "flatgrid.net": "dhcp", "flatgrid.ip": "" },
      currentPassword: "wrong one",
    });
    form.answered(false, "bad settings", [
      { key: "currentPassword", message: "is not the console password" },
    ]);
    assert.equal(form.focus, 0);
    assert.match(screen(form), /\^ Password or token is not the console password/);
  });
});
