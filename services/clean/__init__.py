"""clean: raw pages → articles (main text, metadata, story id of syndicated copies)."""
