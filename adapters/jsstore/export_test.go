package jsstore

// CacheLen reports how many aggregates the store's cache holds (tests only).
func (s *Store) CacheLen() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.cache)
}

// CacheSize reports the cache's bound after defaults (tests only).
func (s *Store) CacheSize() int { return s.cfg.CacheSize }
