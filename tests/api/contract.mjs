// A validator of the OMA's API built from its OpenAPI document: every request (path and
// query parameters, JSON body) and every response (status, media type, JSON body) is
// checked against the operation the document declares for it. A request outside the
// document must be refused (4xx); one the OMA accepts is a mismatch. Browser and flow tests
// feed it what they send and receive, and fail on the first list of violations.
//
//   const contract = await Contract.load(doc);          // the OMA's /api/v1/openapi.json
//   contract.check({method, url, requestBody, status, contentType, body});  // -> [problems]
//
// OpenAPI 3.0 schemas become JSON Schema for ajv (nullable -> a null type; $ref into one
// shared set of definitions). Paths match as the OMA's router does: literal segments
// before {parameters}, from the left.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules", "noop.js"));
const Ajv = require("ajv");

const ROOT = "oma-openapi";

// OpenAPI 3.0 schema object -> JSON Schema (draft-07) for ajv.
function convert(s) {
  if (Array.isArray(s)) return s.map(convert);
  if (!s || typeof s !== "object") return s;
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === "$ref") out.$ref = v.replace("#/components/schemas/", `${ROOT}#/definitions/`);
    else if (k === "nullable" || k === "example") continue;
    else if (k === "properties") out.properties = Object.fromEntries(Object.entries(v).map(([n, p]) => [n, convert(p)]));
    else out[k] = convert(v);
  }
  if (s.nullable) {
    if (out.type) out.type = [out.type, "null"];
    if (out.enum) out.enum = [...out.enum, null];
  }
  return out;
}

function segments(p) {
  return p.split("/").slice(1);
}

export class Contract {
  static async load(doc) {
    return new Contract(doc);
  }

  constructor(doc) {
    this.doc = doc;
    this.ajv = new Ajv({ allErrors: true, strict: true });
    const definitions = Object.fromEntries(Object.entries(doc.components?.schemas ?? {}).map(([n, s]) => [n, convert(s)]));
    this.ajv.addSchema({ $id: ROOT, definitions });
    this.validators = new Map();
    this.routes = Object.keys(doc.paths).map((p) => ({ path: p, segs: segments(p) }));
    this.seen = new Set();  // "METHOD /path status", for the caller's summary
  }

  validator(schema) {
    const key = JSON.stringify(schema);
    if (!this.validators.has(key)) this.validators.set(key, this.ajv.compile(convert(schema)));
    return this.validators.get(key);
  }

  // The document's path for a request path, and its parameters: literal segments win.
  route(pathname) {
    const segs = segments(pathname).map(decodeURIComponent);
    let best = null;
    for (const r of this.routes) {
      if (r.segs.length !== segs.length) continue;
      const params = {};
      const fits = r.segs.every((t, i) => {
        if (t.startsWith("{")) {
          params[t.slice(1, -1)] = segs[i];
          return segs[i] !== "";
        }
        return t === segs[i];
      });
      if (!fits) continue;
      const kinds = r.segs.map((t) => (t.startsWith("{") ? 1 : 0));
      if (!best || kinds.join("") < best.kinds.join("")) best = { ...r, params, kinds };
    }
    return best;
  }

  problems(validate, value, what) {
    if (validate(value)) return [];
    return validate.errors.map((e) => `${what}${e.instancePath || ""}: ${e.message}` +
                                      (e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""));
  }

  // What does not match the document in one exchange; [] when everything does.
  // requestBody: the JSON sent (or undefined); body: the JSON answered (or undefined for
  // text, or when the body was not read, as with an event stream).
  check({ method, url, requestBody, status, contentType, body }) {
    const u = new URL(url, "http://oma");
    const where = `${method} ${u.pathname} -> ${status}`;
    const r = this.route(u.pathname);
    const op = r && this.doc.paths[r.path][method.toLowerCase()];
    if (!op) return [`${where}: no such operation in the document`];
    this.seen.add(`${method} ${r.path} ${status}`);
    const out = [];
    for (const p of op.parameters ?? []) {
      const value = p.in === "path" ? r.params[p.name] : u.searchParams.get(p.name);
      if (value === null || value === "") {
        if (p.required) out.push(`${where}: the ${p.in} parameter ${p.name} is missing`);
        continue;
      }
      out.push(...this.problems(this.validator(p.schema), value, `${where}: ${p.in} parameter ${p.name}`));
    }
    for (const name of u.searchParams.keys()) {
      if (!(op.parameters ?? []).some((p) => p.in === "query" && p.name === name))
        out.push(`${where}: the query parameter ${name} is not documented`);
    }
    const rb = op.requestBody?.content?.["application/json"];
    if (requestBody !== undefined) {
      if (!rb) out.push(`${where}: the operation takes no body`);
      else out.push(...this.problems(this.validator(rb.schema), requestBody, `${where}: request body`));
    } else if (op.requestBody?.required && status < 400) {
      out.push(`${where}: the request body is required`);
    }
    // A request outside the document that the OMA refused (4xx) is the OMA keeping the
    // document; one it accepted is a mismatch.
    if (status >= 400 && status < 500) out.length = 0;
    const resp = op.responses[String(status)];
    if (!resp) return [...out, `${where}: status ${status} is not documented (${Object.keys(op.responses).join(", ")})`];
    const media = (contentType ?? "").split(";")[0].trim();
    const declared = Object.keys(resp.content ?? {}).map((m) => m.split(";")[0].trim());
    if (!declared.includes(media)) out.push(`${where}: content type ${contentType} is not documented (${declared})`);
    const schema = Object.entries(resp.content ?? {}).find(([m]) => m.split(";")[0].trim() === media)?.[1]?.schema;
    if (schema && body !== undefined) out.push(...this.problems(this.validator(schema), body, `${where}: body`));
    return out;
  }
}
