"""entities: language-labelled articles → tagged articles (people, places, organisations, linked)."""
