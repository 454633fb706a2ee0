"""Small helpers every layer may use and that know nothing of models: progress reporting
(:mod:`.progress`), the optional extras and their install hints (:mod:`.extras`), and the one reader
of the distributed environment (:mod:`.distributed`), one writer per folder (:mod:`.folder_lock`).
Imports nothing else from hysafe.
"""
