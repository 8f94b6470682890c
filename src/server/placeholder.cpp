namespace nbu { int kServerPlaceholder = 0; }
