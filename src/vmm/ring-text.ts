/** The guest console's last bytes, bounded: a chatty guest cannot grow the VMM's memory. */
export class RingText {
  private chunks: Buffer[] = [];
  private bytes = 0;
  total = 0;

  constructor(readonly limit: number) {}

  push(data: Buffer): void {
    this.chunks.push(data);
    this.bytes += data.length;
    this.total += data.length;
    while (this.bytes - (this.chunks[0]?.length ?? 0) >= this.limit && this.chunks.length > 1) {
      this.bytes -= this.chunks.shift()?.length ?? 0;
    }
    // Many one-byte chunks (a UART writes byte by byte) are merged now and then.
    if (this.chunks.length > 4096) this.chunks = [Buffer.concat(this.chunks)];
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString("utf8");
  }
}
