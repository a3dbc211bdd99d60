export { type ConsoleOptions, runConsole, terminfoFor } from "./console-app.js";
export {
  appState,
  bar,
  esc,
  gridLine,
  gridScreen,
  logText,
  nodeScreen,
  plain,
  roleText,
} from "./screens.js";
export {
  CpuMeter,
  type Link,
  parseCpuLine,
  readLinks,
  type Snapshot,
  SnapshotReader,
  type Usage,
} from "./snapshot.js";
export {
  partialReplyAtEnd,
  SERIAL_DEFAULT,
  type Size,
  SizeProbe,
  setKernelSize,
  sizeFromCursor,
  sizeKnown,
  type TerminalInput,
  takeCursorReplies,
} from "./terminal-size.js";
