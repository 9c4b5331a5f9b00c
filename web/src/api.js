// The HTTP API client. A token (when the server requires one) comes once from the page URL (`#token=...` as
// `medimg serve` opens it, or `?token=...`), is kept for the tab in sessionStorage, removed from the address bar,
// and sent as `Authorization: Bearer ...`.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  const url = new URL(window.location.href);
  const hash = new URLSearchParams(url.hash.replace(/^#/, ""));
  const fromUrl = hash.get("token") || url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem("medimg-token", fromUrl);
    hash.delete("token");
    url.searchParams.delete("token");
    url.hash = hash.toString();
    window.history.replaceState(null, "", url.toString());
    return fromUrl;
  }
  return sessionStorage.getItem("medimg-token");
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function request(method, path, { json, body, contentType } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = contentType || "application/octet-stream";
  }
  const res = await fetch(path, init);
  if (!res.ok) {
    let message = res.statusText;
    try {
      const data = await res.json();
      message = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail ?? data);
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, `${method} ${path}: ${message}`);
  }
  return res;
}

export const api = {
  get: async (path) => (await request("GET", path)).json(),
  post: async (path, json) => (await request("POST", path, { json })).json(),
  put: async (path, bytes) => (await request("PUT", path, { body: bytes })).json(),
  bytes: async (path) => (await request("GET", path)).arrayBuffer(),
  /** Raw bytes with the response headers (for `labels/region`: X-Shape, X-Dtype). */
  raw: async (path) => {
    const res = await request("GET", path);
    return { buffer: await res.arrayBuffer(), headers: res.headers };
  },
};
