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
  CONSOLE_INPUT_MAX,
  CONSOLE_MAX_BYTES,
  type ConsoleQuery,
  parseConsoleQuery,
} from "./console-query.js";
export {
  type ApiTarget,
  apiOrigin,
  DEFAULT_API_PORT,
  HttpsApiClient,
  replyError,
} from "./https-client.js";
export { MAX_BODY, readBody, readBytes, readJson } from "./request-body.js";
export {
  APP_INSTANCE_CONSOLE,
  type Caller,
  type GridApi,
  routeGridApi,
  sendJson,
} from "./router.js";
