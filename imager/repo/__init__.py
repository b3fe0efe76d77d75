"""The deduplicating snapshot repository (docs/REPOSITORY.md).

store: directories, config, pack indexes, chunk reads · pack: writing packs · lock: the writer
lock · snapshot: snapshot documents · sink: RepoSink (backup) · reader: SnapshotReader
(restore/export/show) · gc: forget, retention and garbage collection · check: verification.
"""
