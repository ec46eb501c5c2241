// The one way the console calls the host: adds the bearer, parses JSON, and turns the host's
// `{"error": "..."}` bodies into thrown ApiError messages. A 401 anywhere signs the user out.

const TOKEN_KEY = 'molecule.console.token';
// Set when the operator chose to go on without a token and the host answered (a development
// host without an admin token): the console may call the API with no bearer.
const OPEN_KEY = 'molecule.console.open-host';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(OPEN_KEY);
}

/** Remembers, for this tab, that the host let the console in without a token. */
export function setOpenHost() {
  sessionStorage.setItem(OPEN_KEY, 'true');
}

/**
 * True when the console may call the host: it holds a token, or the host was found open. Before
 * that nothing calls the API or opens /ws, so a first visit makes no request that can fail.
 */
export function signedIn() {
  return Boolean(token()) || sessionStorage.getItem(OPEN_KEY) === 'true';
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let unauthorized = () => {};

/** Sets what happens when the host answers 401 (the app sends the user to sign-in). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function describe(status, statusText, data) {
  let message = `${status} ${statusText}`.trim();
  if (data && typeof data.error === 'string') {
    message = data.error;
  } else if (data && typeof data.message === 'string') {
    // Structured refusals (a delete that needs ?confirm=true) carry `message` instead.
    message = data.message;
  }
  if (data && data.detail !== undefined && data.detail !== null) {
    const detail = typeof data.detail === 'string' ? data.detail : JSON.stringify(data.detail);
    // A detail that already starts with the message is not prefixed with it a second time.
    message = detail.startsWith(message) ? detail : `${message}: ${detail}`;
  }
  if (data && Array.isArray(data.missing_env) && data.missing_env.length) {
    message += ` (missing: ${data.missing_env.join(', ')})`;
  }
  return message;
}

export async function api(method, path, body) {
  const init = { method, headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return request(path, init);
}

/** POSTs `form` (a FormData: files and fields) as multipart; the host's JSON answer. */
export function upload(path, form) {
  return request(path, { method: 'POST', headers: { accept: 'application/json' }, body: form });
}

/** Sends `init` with the bearer; the parsed answer, or an ApiError saying why not. */
async function request(path, init) {
  const bearer = token();
  if (bearer) {
    init.headers.authorization = `Bearer ${bearer}`;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the host did not answer (${err.message})`, null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, describe(response.status, response.statusText, data), data);
    if (response.status === 401) {
      unauthorized(error.message);
    }
    throw error;
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

/** A path segment (or a slash-separated file path) safe to put in a URL. */
export function seg(value) {
  return String(value).split('/').map(encodeURIComponent).join('/');
}
