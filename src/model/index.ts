export {
  type Application,
  applicationSchema,
  type Catalog,
  type Exposure,
  type Instance,
  type Link,
  NAME as APP_NAME,
  parseApplication,
} from "./application.js";
export { type ApplianceClass, classRef, parseClass, type Terminal } from "./class-descriptor.js";
export { DescriptorError, formatProblem, type Problem } from "./errors.js";
export { formatMiB, parseMiB } from "./quantity.js";
export { DEFAULT_CATALOG, readCatalog } from "./read-catalog.js";
