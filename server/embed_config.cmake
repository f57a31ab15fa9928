# Script mode: cmake -DINPUT=server.yaml -DTEMPLATE=embedded_config.cpp.in -DOUTPUT=file.cpp -P
file(READ ${INPUT} KDESERVE_DEFAULT_CONFIG)
configure_file(${TEMPLATE} ${OUTPUT} @ONLY)
