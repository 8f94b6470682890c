// placeholder: implemented by the Azure client work
