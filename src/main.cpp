// nfs-blob-uploader: the service binary. Everything lives in the libraries tests link.
#include "server/app.h"

int main(int argc, char** argv) { return nbu::server::Main(argc, argv); }
