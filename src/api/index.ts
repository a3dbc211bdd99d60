export {
  type AdminTokenInfo,
  type AdminTokenRecord,
  isTokenId,
  newAdminToken,
  parseAdminToken,
  secretDigest,
  secretMatches,
  TOKEN_NAME,
  tokenInfo,
} from "./admin-token.js";
export { ApiError, errorBody } from "./api-error.js";
export {
  APP_IN_PATH,
  CONSOLE_INPUT_MAX,
  CONSOLE_MAX_BYTES,
  type ConsoleQuery,
  INSTANCE_IN_PATH,
  parseConsoleQuery,
} from "./console-query.js";
export {
  type ApiTarget,
  apiOrigin,
  DEFAULT_API_PORT,
  HttpsApiClient,
  readReplyError,
} from "./https-client.js";
export { MAX_BODY, readBody, readBytes, readJson } from "./request-body.js";
export {
  APP_INSTANCE_CONSOLE,
  type Caller,
  type GridApi,
  routeGridApi,
  sendError,
  sendJson,
  sendStream,
} from "./router.js";
