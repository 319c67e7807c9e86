-- The upload holding a source: only the holder may complete it.
ALTER TABLE sources ADD COLUMN upload_token uuid;
