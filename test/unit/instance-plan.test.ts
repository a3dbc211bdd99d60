// What an instance's VM is made of, from its application alone: its address on the
// application's network, its peers per output terminal, its properties, all on the kernel
// command line the guest init reads. The cluster test runs these plans in real VMMs.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  APP_NETS,
  appSubnet,
  InstancePlanError,
  instanceAddress,
  instanceMac,
  planInstance,
} from "../../src/agent/index.js";
import { shopRecord } from "./shop-record.js";

const shop = shopRecord(1);
const parts = { kernel: "/c/vmlinuz", initrd: "/c/initrd.img", rootfs: "/c/web.ext4" };

describe("instance plans", () => {
  it("gives each application a /20 of 10.128.0.0/9 and each instance an address in it", () => {
    assert.equal(appSubnet(0), "10.128.0.0/20");
    assert.equal(appSubnet(1), "10.128.16.0/20");
    assert.equal(appSubnet(APP_NETS - 1), "10.255.240.0/20");
    assert.equal(instanceAddress(1, 0), "10.128.16.2");
    assert.equal(instanceAddress(1, 4092), "10.128.31.254");
    assert.throws(() => instanceAddress(1, 4093), InstancePlanError);
    assert.throws(() => appSubnet(APP_NETS), /outside 0\.\.2047/);
    assert.equal(instanceMac("10.128.16.2"), "02:fb:0a:80:10:02");
  });

  it("puts the peers of each output terminal and the properties on the command line", () => {
    const web = planInstance(shop, "web.1", parts);
    assert.equal(web.address, "10.128.16.4");
    assert.equal(web.vcpus, 1);
    assert.equal(web.memoryMiB, 256);
    assert.equal(
      web.cmdline,
      "console=ttyS0 quiet fg.name=web.1 fg.app=shop fg.ip=10.128.16.4%2F20 fg.mtu=1450 fg.t.db=10.128.16.6%3A6379 fg.p.title=flatgrid%20shop",
    );
    const lb = planInstance(shop, "lb.0", parts);
    assert.match(
      lb.cmdline,
      / fg\.t\.backend=10\.128\.16\.3%3A80%2C10\.128\.16\.4%3A80%2C10\.128\.16\.5%3A80 fg\.p\.balance=roundrobin$/,
    );
    const db = planInstance(shop, "db.0", parts);
    assert.equal(db.memoryMiB, 1024);
    assert.doesNotMatch(db.cmdline, /fg\.t\./, "db has no output terminal connected");
    // db's class gives each instance a data volume: the guest init mounts vdb at /data.
    assert.equal(db.volumeMiB, 256);
    assert.match(db.cmdline, / fg\.volume=vdb /);
    assert.equal(web.volumeMiB, 0);
    assert.doesNotMatch(web.cmdline, /fg\.volume/);
  });

  it("is the same wherever the instance runs, and refuses what it cannot plan", () => {
    assert.deepEqual(planInstance(shop, "web.2", parts), planInstance(shop, "web.2", parts));
    assert.throws(() => planInstance(shop, "web.3", parts), /has no instance web\.3/);
    const { net: _, ...old } = shop;
    assert.throws(() => planInstance(old, "web.0", parts), /no network number/);
  });
});
