"""``hysafe serve``, an application: a FastAPI search and moderation service over saved collection
indexes (:mod:`.app`) and its search page, real static files under ``static/`` (:mod:`.page` reads
them). Needs the ``serve`` extra; the library never imports it.
"""
