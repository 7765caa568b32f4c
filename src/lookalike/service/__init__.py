"""A face search web service: a JSON API (subjects, enrolment, identify, searches, reviews) and the examiner's
review pages, over a gallery in SQLite or PostgreSQL. ``lookalike serve`` runs it (needs ``lookalike[service]``)."""
