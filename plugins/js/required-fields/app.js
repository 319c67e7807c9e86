// required-fields, in JavaScript, in record mode: every record must fill the fields the
// binding's configuration names in "required", and those in "numeric" must hold numbers.
// Configuration: {"required": ["id", "name"], "numeric": ["amount"]}. The host splits the upload
// into records and hands them over in batches; each record is one JSON object (text).

const NAME = "required-fields-js";
const VERSION = "1.0.0";

function names(config, key) {
  const value = config[key] ?? [];
  if (!Array.isArray(value) || !value.every((name) => typeof name === "string")) {
    throw { tag: "invalid-config", val: `"${key}" must be a list of field names` };
  }
  return value;
}

function filled(value) {
  if (value === undefined || value === null) return false;
  if (typeof value === "string") return value.trim() !== "";
  return true;
}

function numeric(value) {
  if (value === undefined || value === null || typeof value === "number") return true;
  if (typeof value === "string") return value === "" || !Number.isNaN(Number(value.trim() || "x"));
  return false;
}

class Checker {
  constructor(required, numericFields) {
    this.required = required;
    this.numeric = numericFields;
  }

  static open(options) {
    let config = {};
    if (options.config !== undefined) {
      try {
        config = JSON.parse(options.config);
      } catch (error) {
        throw { tag: "invalid-config", val: `not JSON: ${error.message}` };
      }
    }
    if (config === null || typeof config !== "object" || Array.isArray(config)) {
      throw { tag: "invalid-config", val: "must be a JSON object" };
    }
    return new Checker(names(config, "required"), names(config, "numeric"));
  }

  check(batch) {
    const violations = [];
    batch.forEach((text, index) => {
      const record = JSON.parse(text);
      for (const field of this.required) {
        if (!filled(record[field])) violations.push({ index, field, message: "is required" });
      }
      for (const field of this.numeric) {
        if (!numeric(record[field])) violations.push({ index, field, message: "is not a number" });
      }
    });
    return violations;
  }

  finish() {
    return [];
  }
}

export const records = {
  describe() {
    return {
      name: NAME,
      version: VERSION,
      resources: [{ name: "*", schema: undefined }],
      capabilities: { validate: true, transform: false, convert: false },
    };
  },
  Checker,
};
