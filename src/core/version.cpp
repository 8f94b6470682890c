namespace nbu { const char* kVersion = "0.1.0"; }
