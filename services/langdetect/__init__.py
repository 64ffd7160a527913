"""langdetect: articles → language-labelled articles (document, title and paragraph languages)."""
