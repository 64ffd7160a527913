"""The pipeline's services, one package each: fetch → clean → langdetect → entities → alert."""
