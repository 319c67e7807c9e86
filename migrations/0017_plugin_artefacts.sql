-- Compiled components (wasmtime artefacts) by component digest and engine fingerprint: a
-- component is compiled once per engine configuration, and replicas of the same fingerprint load
-- the artefact instead of compiling. The artefact's SHA-256 is checked before it is loaded (an
-- artefact runs as native code, so only the bytes recorded here are trusted).
CREATE TABLE plugin_artefacts (
    digest text NOT NULL,
    fingerprint text NOT NULL,
    object_key text NOT NULL,
    sha256 text NOT NULL,
    size_bytes bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (digest, fingerprint)
);
